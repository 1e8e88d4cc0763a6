"""Issue #16, problem by problem: each test reproduces one way the artifact used to break a promise and shows the
promise kept (README "What happens when…" names these tests).

1. An interrupted first run poisoned the generated assets: ``tests/test_generated_assets.py`` kills real builds;
   here, that the runner goes through the completeness checks.
2. Failures reported as success; error results never retried.
3. A valid-JSON result with one wrong field crashed the runner (``tests/test_results.py`` covers the readers).
4. Time-curve provenance across resumes after a code edit and across concurrent runs.
5. Bad input found late or as a traceback: every probe is one line, exit 2, nothing written, no model loaded.
6. SIGKILL to a ``time-curve`` parent left its worker running and its temp dir behind.
7. Two identical runs measured cells twice (``tests/test_executors.py`` runs two at once for real); result files
   written 0600; an untracked ``.py`` left ``git_dirty`` false; an errored cell's dry-run reason.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from longctx import provenance, runner
from longctx.atomic_files import atomic_write_json
from longctx.cli import main
from longctx.commands.run import raise_if_failed
from longctx.errors import RunFailure
from longctx.plan import Plan
from longctx.results import ReusePolicy, read_result
from test_runner import _install_fake_study, _plan

SRC = Path(__file__).resolve().parents[1] / "src"
CELL = "attribution/efficient/IG/P10-G4"  # the time curves below: IG at P=10, G=4 (and G=8)


def _env(**extra) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def _time_curve(model: Path, out_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "longctx", "attribution", "time-curve", "--model", str(model), "--attr-funcs", "IG",
        "--input-lengths", "10", "--output-lengths", "4", "--repeats", "2", "--warmup", "0", "--dtype", "float32",
        "--device", "cpu", "--output-dir", str(out_dir), *extra,
    ]  # fmt: skip


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = kwargs.pop("env", _env())
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, **kwargs)


def _starts(results_dir: Path) -> Counter:
    path = results_dir / "logs" / "cells.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return Counter(e["cell"] for e in map(json.loads, lines) if e["event"] == "start")


def _runs(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "time_curve_runs.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------------------------- 1. assets


def test_1_the_runner_checks_generated_assets_for_completeness(tmp_path, monkeypatch, capsys):
    """A 0-byte smoke text left by an interrupted run is rebuilt; the tiny models go through ensure_tiny_models."""
    import longctx.data.samples as samples
    import longctx.tiny as tiny

    monkeypatch.setattr(samples, "SAMPLES_DIR", tmp_path)
    ensured = []
    monkeypatch.setattr(tiny, "ensure_tiny_models", lambda path: ensured.append(path))
    (tmp_path / "smoke-pg19.json").write_bytes(b"")
    plan = Plan("smoke", "t", {"tiny_models": "assets/tiny", "smoke_texts": {"pg19": [50, 1]}}, [])
    runner.prepare_assets(plan)
    assert ensured == ["assets/tiny"]
    assert json.loads((tmp_path / "smoke-pg19.json").read_text())["text"]
    assert "incomplete" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------- 2. failures


@pytest.fixture(scope="module")
def broken_model(tiny_dir, tmp_path_factory) -> Path:
    """tiny-qwen3 with its embedding saved in a wrong shape: valid files (input checks pass), but it cannot load."""
    import torch
    from safetensors.torch import load_file, save_file

    model = tmp_path_factory.mktemp("broken") / "tiny-qwen3"
    shutil.copytree(tiny_dir / "tiny-qwen3", model)
    weights = next(model.glob("*.safetensors"))
    tensors = load_file(weights)
    key = next(k for k in tensors if "embed_tokens" in k)
    tensors[key] = torch.zeros(7, 3)
    save_file(tensors, weights, metadata={"format": "pt"})
    return model


def test_2_cells_ending_in_init_error_fail_the_run(broken_model, tmp_path):
    """Exit 1, the cell and the command to retry it listed (the next run retries it: see the test below)."""
    out = tmp_path / "tc"
    first = _run(_time_curve(broken_model, out))
    assert first.returncode == 1, first.stdout[-2000:] + first.stderr[-2000:]
    assert "1 cells: 1 failed" in first.stdout
    assert f"not ok (1):\n  {CELL}: init_error: RuntimeError" in first.stdout
    assert "retry them with: longctx attribution time-curve" in first.stdout
    assert read_result(out / "results" / f"{CELL}.json").status.startswith("init_error")


def _error_result(tmp_path, status: str) -> Path:
    path = tmp_path / "fake" / "x" / "1.json"
    data = json.loads(path.read_text())
    data["status"] = status
    path.write_text(json.dumps(data))
    return path


def test_2_an_error_result_is_retried_with_its_hash_unchanged_an_oom_only_with_retry_oom(tmp_path, monkeypatch,
                                                                                        capsys):  # fmt: skip
    calls = []
    _install_fake_study(monkeypatch, calls)
    runner.run_plan(_plan([1]), tmp_path, ReusePolicy(), env={})
    _error_result(tmp_path, "init_error: OSError: weights unreadable")
    runner.run_plan(_plan([1]), tmp_path, ReusePolicy(), dry_run=True, env={})
    assert "its last run errored (init_error: OSError: weights unreadable); retrying" in capsys.readouterr().out
    report = runner.run_plan(_plan([1]), tmp_path, ReusePolicy(), env={})
    assert calls == [1, 1] and report.actions == {"fake/x/1": "run"}
    _error_result(tmp_path, "oom")
    assert runner.run_plan(_plan([1]), tmp_path, ReusePolicy(), env={}).actions == {"fake/x/1": "skip"}
    report = runner.run_plan(_plan([1]), tmp_path, ReusePolicy.from_env({"RETRY_OOM": "1"}), env={})
    assert calls == [1, 1, 1] and report.actions == {"fake/x/1": "run"}


def test_2_a_failed_cell_exits_1_with_the_cells_and_the_retry_command(tmp_path, monkeypatch, capsys):
    _install_fake_study(monkeypatch, [], fail_on={2})
    report = runner.run_plan(_plan([1, 2]), tmp_path, ReusePolicy(), env={})
    out = capsys.readouterr().out
    assert "2 cells: 1 failed, 1 run" in out and "not ok (1):\n  fake/x/2: RuntimeError: boom" in out
    assert "retry them with: longctx" in out
    with pytest.raises(RunFailure, match="fake/x/2"):
        raise_if_failed(report)


# ----------------------------------------------------------------------------------------------- 3. schema


def test_3_a_result_with_a_null_fingerprint_is_reported_once_and_rerun(tmp_path, monkeypatch, capsys):
    calls = []
    _install_fake_study(monkeypatch, calls)
    runner.run_plan(_plan([1]), tmp_path, ReusePolicy(), env={})
    path = tmp_path / "fake" / "x" / "1.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "fingerprint": None}))
    capsys.readouterr()
    runner.run_plan(_plan([1]), tmp_path, ReusePolicy(), dry_run=True, env={})
    captured = capsys.readouterr()
    assert "  run          fake/x/1" in captured.out and captured.err.count("malformed result") == 1
    runner.run_plan(_plan([1]), tmp_path, ReusePolicy(), env={})
    assert calls == [1, 1] and read_result(path) is not None


# ----------------------------------------------------------------------------------------------- 4. time curve


def test_4_a_resume_after_a_code_edit_never_mixes_two_code_versions(tiny_dir, tmp_path):
    """After an edit of the measuring code, the resumed curve measures its cell again: every row of the runs file and
    the summary carries the hash of the code that measured it, and only one version is left."""
    out, model = tmp_path / "tc", tiny_dir / "tiny-qwen3"
    first = _run(_time_curve(model, out))
    assert first.returncode == 0, first.stderr[-2000:]
    old_hash = _runs(out)[0]["config_hash"]
    edited = tmp_path / "edited-src"
    shutil.copytree(SRC / "longctx", edited / "longctx", ignore=shutil.ignore_patterns("__pycache__"))
    with (edited / "longctx" / "attribution" / "worker.py").open("a") as fh:
        fh.write("\n# an edit of the measuring code\n")
    resumed = _run(_time_curve(model, out), env=_env(PYTHONPATH=str(edited)))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "config, code, model or data changed" in resumed.stdout
    current = {read_result(out / "results" / f"{CELL}.json").config_hash}
    assert old_hash not in current
    assert {row["config_hash"] for row in _runs(out)} == current and len(_runs(out)) == 2
    with (out / "time_curve_summary.csv").open() as fh:
        assert {row["config_hash"] for row in csv.DictReader(fh)} == current


def test_4_two_time_curves_in_one_directory_measure_each_cell_once_with_unique_repeats(tiny_dir, tmp_path):
    out = tmp_path / "tc"
    cmd = _time_curve(tiny_dir / "tiny-qwen3", out, "--output-lengths", "4,8")
    procs = [subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    finished = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], finished
    assert _starts(out / "results") == Counter({CELL: 1, CELL.replace("G4", "G8"): 1})
    repeats: dict[int, list[int]] = {}
    for row in _runs(out):
        repeats.setdefault(row["output_len"], []).append(row["repeat"])
    assert repeats == {4: [0, 1], 8: [0, 1]}
    with (out / "time_curve_summary.csv").open() as fh:
        assert [row["n_runs"] for row in csv.DictReader(fh)] == ["2", "2"]


# ----------------------------------------------------------------------------------------------- 5. bad input


@pytest.fixture(scope="module")
def bad(tiny_dir, tmp_path_factory) -> dict[str, Path]:
    """Broken model directories and text files, and places nothing may be written to."""
    root = tmp_path_factory.mktemp("bad")
    good = tiny_dir / "tiny-gpt-neox"
    paths = {"good": good}
    for name in ("noweights", "truncated", "garbage", "badconfig"):
        shutil.copytree(good, root / name)
        paths[name] = root / name
    next(paths["noweights"].glob("*.safetensors")).unlink()
    weights = next(paths["truncated"].glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])
    next(paths["garbage"].glob("*.safetensors")).write_bytes(os.urandom(5000))
    (paths["badconfig"] / "config.json").write_text("{not json")
    (root / "latin1.txt").write_bytes("café, l'été\n".encode("latin-1"))
    (root / "empty.txt").write_text("")
    (root / "text.txt").write_text("A plain text of a few words. " * 40)
    (root / "afile").write_text("x")
    paths.update({name: root / name for name in ("latin1.txt", "empty.txt", "text.txt", "afile")})
    paths["root"] = root
    return paths


def _one_line_exit_2(argv: list[str], capsys, must_mention: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("longctx: error:") and must_mention in err[0], err


STREAMING = ["streaming", "eval", "--method", "recompute", "--n-sink", "0", "--cap-total", "64", "--max-eval-tokens",
             "50", "--dtype", "float32"]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "mention"),
    [
        ("device", "--device 'banana' is not a device"),
        ("noweights", "has no weights"),
        ("truncated", "not a valid safetensors file"),
        ("garbage", "not a valid safetensors file"),
        ("badconfig", "is not valid JSON"),
        ("latin1", "is not UTF-8: byte 0xe9"),
        ("out-dir", "is a directory"),
        ("out-under-file", "which is a file, not a directory"),
        ("out-is-input", "writing it would destroy the input"),
    ],
)
def test_5_streaming_eval_refuses_bad_input_before_any_work(bad, tmp_path, capsys, monkeypatch, case, mention):
    import longctx.streaming.cell

    monkeypatch.setattr(longctx.streaming.cell, "load_causal_lm", lambda *a, **k: pytest.fail("a model was loaded"))
    model, text, out = bad["good"], bad["text.txt"], tmp_path / "out.json"
    device = "cpu"
    if case in ("noweights", "truncated", "garbage", "badconfig"):
        model = bad[case]
    elif case == "device":
        device = "banana"
    elif case == "latin1":
        text = bad["latin1.txt"]
    elif case == "out-dir":
        out = tmp_path
    elif case == "out-under-file":
        out = bad["afile"] / "out.json"
    elif case == "out-is-input":
        text = tmp_path / "input.txt"
        shutil.copy(bad["text.txt"], text)
        out = text
    before = text.read_bytes()
    argv = [*STREAMING, "--model", str(model), "--text-file", str(text), "--device", device, "--out", str(out)]
    _one_line_exit_2(argv, capsys, mention)
    assert text.read_bytes() == before
    assert case in ("out-dir", "out-is-input") or not (tmp_path / "out.json").exists()


@pytest.mark.parametrize(
    ("case", "mention"),
    [
        ("prompt-latin1", "--prompt-file"),
        ("prompt-empty", "is empty"),
        ("ruler-latin1", "--ruler-file"),
        ("outdir-file", "is a file, not a directory"),
    ],
)
def test_5_attribution_refuses_bad_input_before_any_work(bad, tiny_dir, tmp_path, capsys, case, mention):
    model = str(tiny_dir / "tiny-qwen3")
    if case.startswith("prompt"):
        prompt = bad["latin1.txt" if case == "prompt-latin1" else "empty.txt"]
        argv = ["attribution", "explain", "--model", model, "--method", "IG", "--prompt-file", str(prompt),
                "--target-text", "x", "--out", str(tmp_path / "a.json")]  # fmt: skip
    else:
        extra = ["--ruler-file", str(bad["latin1.txt"])] if case == "ruler-latin1" else []
        out_dir = bad["afile"] if case == "outdir-file" else tmp_path / "tc"
        argv = ["attribution", "time-curve", "--model", model, "--attr-funcs", "IG", "--input-lengths", "10",
                "--output-lengths", "4", "--output-dir", str(out_dir), *extra]  # fmt: skip
    _one_line_exit_2(argv, capsys, mention)
    assert list(tmp_path.iterdir()) == []


def test_5_run_refuses_a_results_dir_that_is_a_file_before_any_work(bad, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runner, "prepare_assets", lambda plan: pytest.fail("assets were prepared"))
    _one_line_exit_2(["run", "main", "--profile", "smoke", "--results-dir", str(bad["afile"])], capsys, "is a file")


# ----------------------------------------------------------------------------------------------- 6. orphans


def test_6_sigkill_to_a_time_curve_parent_takes_its_worker_along_and_the_rerun_takes_over(tiny_dir, tmp_path):
    """The parent runs in its own process group (as a shell job would); SIGKILL reaches the parent alone. Its worker
    dies with it (PR_SET_PDEATHSIG), leaves no temp dir, and the next run takes over the dead runner's claim."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "tc"
    cmd = _time_curve(tiny_dir / "tiny-qwen3", out)
    parent = subprocess.Popen(cmd, env=_env(TMPDIR=str(scratch)), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        worker = None
        deadline = time.monotonic() + 300
        while worker is None and time.monotonic() < deadline:
            kids = psutil.Process(parent.pid).children(recursive=True)
            worker = next((k for k in kids if "longctx.attribution.worker" in " ".join(k.cmdline())), None)
            time.sleep(0.2)
        assert worker is not None, "the time curve never started its worker"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        worker.wait(timeout=30)  # psutil: raises TimeoutExpired if the worker outlives its parent
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
    assert list(scratch.iterdir()) == []
    assert (out / "results" / ".claims" / f"{CELL}.claim").exists()
    rerun = _run(cmd)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "took it over from" in rerun.stdout + rerun.stderr and "is gone" in rerun.stdout + rerun.stderr
    assert [row["status"] for row in _runs(out)] == ["ok", "ok"]


# ----------------------------------------------------------------------------------------------- 7. smaller


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_7_result_files_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = atomic_write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_7_an_untracked_py_in_the_package_sets_git_dirty(tmp_path, monkeypatch):
    package = tmp_path / "repo" / "pkg"
    package.mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=package.parent, check=True)
    subprocess.run([*git, "add", "."], cwd=package.parent, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=package.parent, check=True)
    monkeypatch.setattr(provenance, "PACKAGE_ROOT", package)

    def dirty() -> bool:
        provenance.code_version.cache_clear()
        provenance.source_sha256.cache_clear()
        return provenance.code_version()["git_dirty"]

    try:
        assert dirty() is False
        (package / "notes.txt").write_text("not code")
        assert dirty() is False
        (package / "new_module.py").write_text("y = 2\n")
        assert dirty() is True
    finally:
        provenance.code_version.cache_clear()
        provenance.source_sha256.cache_clear()
