"""Runners sharing one result store, for real: the smoke streaming plan's `main` slice (6 cells, two datasets: two
timing groups) run by the real CLI: two identical local runners at once (--jobs 2 each), and through the local Slurm
(submitit), alone, beside a local runner, and with a job cancelled and another preempted.

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
CELLS = 6  # `longctx run main --profile smoke` with STUDIES=streaming
PG19_BASELINE, WIKITEXT_BASELINE = "streaming/pg19/recompute-S0-C256", "streaming/wikitext/recompute-S0-C256"
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
    def start(cls, project: Path, results: str, *args: str, slice_: str = "main") -> Runner:
        log = project / f"{results}-{time.monotonic_ns()}.log"
        cmd = [sys.executable, "-m", "longctx", "run", slice_, "--profile", "smoke", "--results-dir", results, *args]
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
                cmd, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
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


def run(project: Path, results: str, *args: str, slice_: str = "main") -> tuple[int, str]:
    return Runner.start(project, results, *args, slice_=slice_).wait()


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


def assert_each_once(store: Path, outputs: list[str]) -> None:
    counts = computations(store)
    assert len(counts) == CELLS and set(counts.values()) == {1}, (counts, *(o[-2000:] for o in outputs))
    assert len(results(store)) == CELLS
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
        assert re.search(r"^6 cells: .*", out, re.M), out[-2000:]
    assert_each_once(store, [out for _, out in finished])


@pytest.mark.slurm
def test_slurm_run_writes_the_same_results_as_a_local_run(slurm, project, local_store):
    code, out = run(project, "results-slurm", "--executor", "slurm")
    assert code == 0, out[-3000:]
    store = project / "results-slurm" / "smoke"
    assert_each_once(store, [out])
    assert "slurm: submitted job" in out and "slurm: 6 done, 0 running, 0 queued, 0 failed" in out
    local, remote = results(local_store[0]), results(store)
    assert local.keys() == remote.keys()
    for cell_id, mine in remote.items():
        theirs = local[cell_id]
        assert mine["config_hash"] == theirs["config_hash"], cell_id
        assert abs(mine["metrics"]["ppl"] - theirs["metrics"]["ppl"]) <= 1e-6, cell_id
        assert mine["provenance"]["slurm_job_id"], cell_id
    jobs = {r["provenance"]["slurm_job_id"] for r in remote.values()}
    by_dataset = {cid.split("/")[1]: r["provenance"]["slurm_job_id"] for cid, r in remote.items()}
    assert len(jobs) == 2 and len(set(by_dataset.values())) == 2, "one job per timing group (dataset)"


@pytest.mark.slurm
def test_a_local_and_a_slurm_runner_together_measure_every_cell_once(slurm, project):
    runners = [Runner.start(project, "results-mixed", "--executor", "slurm"), Runner.start(project, "results-mixed")]
    finished = [r.wait() for r in runners]
    for code, out in finished:
        assert code == 0, out[-3000:]
    assert_each_once(project / "results-mixed" / "smoke", [out for _, out in finished])


@pytest.mark.slurm
@pytest.mark.slow
def test_cancelled_job_fails_its_cell_a_preempted_one_is_requeued_and_a_rerun_measures_only_the_cancelled(
    slurm, project
):
    """`longctx run baseline`: two cells, one job each. The WikiText job is preempted (USR2, as Slurm signals it):
    submitit requeues it and it finishes. The PG19 job (the longer cell: it cannot finish within Slurm's 10 s kill
    grace) is cancelled (scancel): the run fails naming that cell and the command to retry; the rerun takes over the
    dead job's claim and measures that cell and nothing else."""
    runner = Runner.start(project, "results-cancel", "--executor", "slurm", slice_="baseline")
    store = project / "results-cancel" / "smoke"
    preempted, cancelled = claim_of(store, WIKITEXT_BASELINE)["job_id"], claim_of(store, PG19_BASELINE)["job_id"]
    subprocess.run(["scancel", cancelled], check=True)
    subprocess.run(["scancel", "--signal=USR2", preempted], check=True)
    code, out = runner.wait()
    assert code == 1, out[-3000:]
    assert f"not ok (1):\n  {PG19_BASELINE}: Slurm job {cancelled} ended without finishing it" in out
    assert "retry them with: longctx run baseline --profile smoke --results-dir results-cancel --executor slurm" in out
    restarts = [e.get("restart") for e in events(store) if e["cell"] == WIKITEXT_BASELINE and e["event"] == "start"]
    assert restarts == [0, 1], events(store)
    assert results(store)[WIKITEXT_BASELINE]["status"] == "ok"
    before = len(events(store))
    code, out = run(project, "results-cancel", "--executor", "slurm", slice_="baseline")
    assert code == 0, out[-3000:]
    assert computations(store, since=before) == Counter({PG19_BASELINE: 1})
    assert "took it over" in out and "is gone" in out, out[-2000:]
