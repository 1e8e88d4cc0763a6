"""Runners sharing one result store, for real: the smoke streaming plan's recompute baselines (`longctx run baseline`
with STUDIES=streaming: 4 cells, two datasets × two protocols, so two timing groups of two cells) run by the real
CLI: two identical local runners at once (--jobs 2 each), and through the local Slurm (submitit): alone (with a job
preempted and requeued), beside a local runner, and with a job cancelled and the run resumed.

Computations are counted from ``logs/cells.jsonl`` (one ``start`` line per measurement), not from result files.
The Slurm tests need the one-node cluster of ``scripts/slurm-local.sh start`` (``.ci/run`` starts it) and skip,
saying how to get it, when it is down.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import install_tiny_models, slurm_unavailable_reason

SRC = Path(__file__).resolve().parents[1] / "src"
PG19, WIKITEXT = "streaming/pg19/recompute-S0-C256", "streaming/wikitext/recompute-S0-C256"
CELLS = {PG19, f"{PG19}-ref", WIKITEXT, f"{WIKITEXT}-ref"}  # `longctx run baseline --profile smoke`, streaming only
TIMEOUT_S = 400


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_dir) -> Path:
    """A scratch project directory with the tiny models in place (the runner makes the smoke texts)."""
    work = tmp_path_factory.mktemp("executors")
    install_tiny_models(tiny_dir, work)
    return work


@pytest.fixture(scope="module")
def slurm():
    """The local Slurm must take jobs (and sacct work): else these tests skip with the reason and the fix."""
    reason = slurm_unavailable_reason()
    if reason:
        pytest.skip(reason)


@dataclass
class Runner:
    """One `longctx run` in its own process group, its output in a log file."""

    proc: subprocess.Popen
    log: Path

    @classmethod
    def start(cls, project: Path, results: str, *args: str) -> Runner:
        log = project / f"{results}-{time.monotonic_ns()}.log"
        cmd = [sys.executable, "-m", "longctx", "run", "baseline", "--profile", "smoke", "--results-dir", results]
        env = {
            **os.environ,
            "PYTHONPATH": str(SRC),
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            "STUDIES": "streaming",
            "SLURM_POLL_S": "2",
        }
        with log.open("w") as out:
            proc = subprocess.Popen(
                [*cmd, *args], cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return cls(proc, log)

    def wait(self) -> tuple[int, str]:
        """Its exit code and output (killed with its group if it hangs)."""
        try:
            code = self.proc.wait(timeout=TIMEOUT_S)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return code, self.log.read_text()


def run(project: Path, results: str, *args: str) -> tuple[int, str]:
    return Runner.start(project, results, *args).wait()


def events(store: Path) -> list[dict]:
    path = store / "logs" / "cells.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def computations(store: Path, since: int = 0) -> Counter:
    """How often each cell was measured (started), counting the events from index ``since``."""
    return Counter(e["cell"] for e in events(store)[since:] if e["event"] == "start")


def results(store: Path) -> dict[str, dict]:
    return {
        str(p.relative_to(store).with_suffix("")): json.loads(p.read_text())
        for p in (store / "streaming").rglob("*.json")
    }


def claim_of(store: Path, cell_id: str, timeout_s: float = 120) -> dict:
    """The claim on ``cell_id`` once a Slurm job holds it."""
    path = store / ".claims" / f"{cell_id}.claim"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            claim = json.loads(path.read_text())
        except (OSError, ValueError):
            claim = None
        if claim and claim.get("job_id"):
            return claim
        time.sleep(0.5)
    raise AssertionError(f"no Slurm job claimed {cell_id} within {timeout_s} s")


def assert_each_once(store: Path, outputs: list[str], again: str | None = None) -> None:
    """Every cell measured exactly once (``again``: twice, its first run interrupted), no claim left."""
    expected = Counter({cell: 1 + (cell == again) for cell in CELLS})
    assert computations(store) == expected, (computations(store), *(o[-2000:] for o in outputs))
    assert set(results(store)) == CELLS
    assert not list((store / ".claims").rglob("*.claim")), "a claim was left behind"


@pytest.fixture(scope="module")
def local_store(project) -> tuple[Path, list[tuple[int, str]]]:
    """Two identical local runners at once on one store, two workers each: the reference results of this module."""
    runners = [Runner.start(project, "results-local", "--jobs", "2") for _ in range(2)]
    return project / "results-local" / "smoke", [r.wait() for r in runners]


def test_two_identical_local_runners_measure_every_cell_once(local_store):
    store, finished = local_store
    for code, out in finished:
        assert code == 0, out[-3000:]
        assert re.search(r"^4 cells: ", out, re.M), out[-2000:]
    assert_each_once(store, [out for _, out in finished])


@pytest.mark.slurm
def test_slurm_run_preempted_midway_writes_the_same_results_as_a_local_run(slurm, project, local_store):
    """One job per timing group (dataset); the PG19 job is preempted (USR2, as Slurm signals it) during its first
    cell: submitit checkpoints and requeues it, it resumes from the store, and every number equals the local run's."""
    runner = Runner.start(project, "results-slurm", "--executor", "slurm")
    store = project / "results-slurm" / "smoke"
    preempted = claim_of(store, PG19)["job_id"]
    subprocess.run(["scancel", "--signal=USR2", preempted], check=True)
    code, out = runner.wait()
    assert code == 0, out[-3000:]
    assert "slurm: 4 done, 0 running, 0 queued, 0 failed" in out
    assert_each_once(store, [out], again=PG19)
    restarts = [e.get("restart") for e in events(store) if e["cell"] == PG19 and e["event"] == "start"]
    assert restarts == [0, 1], events(store)
    local, remote = results(local_store[0]), results(store)
    for cell_id, mine in remote.items():
        theirs = local[cell_id]
        assert mine["config_hash"] == theirs["config_hash"], cell_id
        assert abs(mine["metrics"]["ppl"] - theirs["metrics"]["ppl"]) <= 1e-6, cell_id
    jobs = {cid.split("/")[1]: {r["provenance"]["slurm_job_id"]} for cid, r in remote.items()}
    assert all(len(j) == 1 for j in jobs.values()) and jobs["pg19"] != jobs["wikitext"], "one job per timing group"


@pytest.mark.slurm
def test_a_local_and_a_slurm_runner_together_measure_every_cell_once(slurm, project):
    runners = [Runner.start(project, "results-mixed", "--executor", "slurm"), Runner.start(project, "results-mixed")]
    finished = [r.wait() for r in runners]
    for code, out in finished:
        assert code == 0, out[-3000:]
    assert_each_once(project / "results-mixed" / "smoke", [out for _, out in finished])


@pytest.mark.slurm
def test_cancelled_job_fails_its_cells_and_the_rerun_measures_exactly_those(slurm, project):
    """scancel of the PG19 job during its first cell: the run fails naming the cells that job left unmeasured and
    the command to retry; the rerun takes over the dead job's claim and measures those cells and nothing else."""
    runner = Runner.start(project, "results-cancel", "--executor", "slurm")
    store = project / "results-cancel" / "smoke"
    cancelled = claim_of(store, PG19)["job_id"]
    subprocess.run(["scancel", cancelled], check=True)
    code, out = runner.wait()
    assert code == 1, out[-3000:]
    unmeasured = CELLS - set(results(store))
    assert f"{PG19}-ref" in unmeasured and not unmeasured & {WIKITEXT, f"{WIKITEXT}-ref"}
    assert f"not ok ({len(unmeasured)}):" in out
    for cell_id in unmeasured:
        assert f"  {cell_id}: Slurm job {cancelled} ended without finishing it" in out
    assert "retry them with: longctx run baseline --profile smoke --results-dir results-cancel --executor slurm" in out
    before = len(events(store))
    code, out = run(project, "results-cancel", "--executor", "slurm")
    assert code == 0, out[-3000:]
    assert computations(store, since=before) == Counter(unmeasured)
    if PG19 in unmeasured:  # the cell the job was killed in (it may also have ended within Slurm's kill grace)
        assert "took it over" in out and "is gone" in out, out[-2000:]
    assert set(results(store)) == CELLS
