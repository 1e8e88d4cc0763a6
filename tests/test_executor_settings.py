"""How the executors are chosen and sized, without running anything: flags and knobs, Slurm job shapes and options,
the Apptainer wrapping, timing groups, one GPU per local worker."""

from __future__ import annotations

import pytest

from longctx.cli import main
from longctx.errors import UsageError
from longctx.estimate import Estimate, estimate, gpus_of
from longctx.executors.local import worker_environments
from longctx.executors.slurm import JobShape, SlurmSettings, container_python, parse_options
from longctx.plan import load_plan
from longctx.runner import timing_groups


def test_timing_groups_are_a_dataset_of_streaming_and_a_curve_of_attribution():
    plan = load_plan("smoke", {})
    groups = timing_groups(plan)
    assert set(groups.values()) == {
        "streaming/pg19", "streaming/wikitext", "attribution/time_curve_output", "attribution/time_curve_prompt"
    }  # fmt: skip
    for cell in plan.cells:
        expected = f"streaming/{cell.labels['dataset']}" if cell.study == "streaming" else f"attribution/{cell.group}"
        assert groups[cell.id] == expected


def test_groups_sharing_a_cell_merge(monkeypatch):
    plan = load_plan("smoke", {})
    from longctx.plan import Plan
    from longctx.study import Cell

    pg19 = next(c for c in plan.cells if c.labels.get("dataset") == "pg19")
    twin = Cell(pg19.id, "streaming", "main", {**pg19.labels, "dataset": "wikitext"}, pg19.config)
    wiki = next(c for c in plan.cells if c.labels.get("dataset") == "wikitext")
    groups = timing_groups(Plan("smoke", "t", {}, [pg19, twin, wiki]))
    assert groups[pg19.id] == groups[wiki.id]


def test_estimate_and_gpus():
    plan = load_plan("full", {})
    cell = plan.cells[0]
    assert estimate(plan, cell) == Estimate(seconds=600.0, gpus=1, mem_gb=32.0)
    assert gpus_of({"device": "cpu"}) == 0 and gpus_of({"device": "cuda:1"}) == 1
    assert gpus_of({"device": "cuda", "cuda": "0,1"}) == 2


def test_job_shape_from_estimates():
    gpu = [Estimate(600, 1, 32.0)] * 10
    shape = JobShape.of(gpu, jobs=4)
    assert (shape.parallel, shape.gpus, shape.cpus, shape.mem_gb) == (4, 4, 16, 128)
    assert shape.minutes == (600 * 10 / 4 * 4 + 600) // 60
    cpu = JobShape.of([Estimate(4, 0, 4.0)] * 3, jobs=1)
    params = cpu.parameters(SlurmSettings(partition="debug"), "longctx-x")
    assert params["cpus_per_task"] == 1 and "gpus_per_node" not in params and params["partition"] == "debug"
    assert params["setup"] == ["export OMP_NUM_THREADS=1"]


def test_slurm_opts_override_the_computed_parameters():
    settings = SlurmSettings(account="a", options=parse_options("--mem=64G --constraint=a100 --exclusive"))
    params = JobShape.of([Estimate(60, 1, 32.0)], jobs=1).parameters(settings, "n")
    assert "mem" not in params and params["account"] == "a"
    assert params["additional_parameters"] == {"mem": "64G", "constraint": "a100", "exclusive": None}
    with pytest.raises(UsageError, match="SLURM_OPTS"):
        parse_options("-p gpu")


def test_slurm_settings_from_knobs():
    env = {"SLURM_PARTITION": "gpu", "SLURM_QOS": "high", "SLURM_CONTAINER": "artifact.sif", "SLURM_POLL_S": "3"}
    settings = SlurmSettings.from_env(env)
    assert (settings.partition, settings.account, settings.qos, settings.container, settings.poll_s) == (
        "gpu", None, "high", "artifact.sif", 3.0
    )  # fmt: skip


def test_container_wraps_the_job_python(tmp_path):
    command = container_python("artifact.sif", tmp_path / "results")
    root = str((tmp_path / "results").resolve())
    assert command.startswith("apptainer exec --nv ")
    assert f"--bind {root}:/opt/longctx/results" in command and f"--bind {root}:{root}" in command
    assert command.endswith("--pwd /opt/longctx artifact.sif python")


def test_local_workers_get_one_gpu_each_or_a_share_of_the_cores(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    envs = worker_environments(2, gpus_per_cell=1)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["2", "5"]
    with pytest.raises(UsageError, match="only 2 GPU"):
        worker_environments(3, gpus_per_cell=1)
    with pytest.raises(UsageError, match="use --jobs 1"):
        worker_environments(2, gpus_per_cell=2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert [e["OMP_NUM_THREADS"] for e in worker_environments(4, gpus_per_cell=0)] == ["2"] * 4


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--executor", "banana"], {}, "executor 'banana': choose local or slurm"),
        (["--jobs", "0"], {}, "--jobs 0: must be >= 1"),
        ([], {"EXECUTOR": "pbs"}, "executor 'pbs'"),
        ([], {"JOBS": "two"}, "JOBS='two': expected an integer"),
        (["--executor", "slurm"], {"PATH": "/nonexistent"}, "no sbatch on PATH"),
    ],
)
def test_bad_executor_choices_exit_2(tmp_path, monkeypatch, capsys, argv, env, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("longctx.runner.prepare_assets", lambda plan: None)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["run", "baseline", "--profile", "smoke", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
