"""Per-cell claims in the result store: who holds a cell, when a claim is stale and taken over, and what a runner
does with a cell another runner is measuring (waits, then reports it measured by the other; or skips it and fails)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import asdict, replace

import pytest

from longctx import runner
from longctx.commands.run import raise_if_failed
from longctx.errors import RunFailure
from longctx.executors import local
from longctx.executors.claims import Claim, ClaimStore, process_start
from longctx.results import ReusePolicy, atomic_write_json
from test_runner import FakeStudy, _install_fake_study, _plan


@pytest.fixture
def dead_pid():
    """The pid of a process of this host that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def live_process():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def _write_claim(store: ClaimStore, cell_id: str, **fields) -> Claim:
    claim = replace(Claim.mine(cell_id, 3600.0), **fields)
    atomic_write_json(store.path(cell_id), asdict(claim))
    return claim


def test_a_cell_is_claimed_once_until_released(tmp_path):
    store = ClaimStore(tmp_path)
    first = store.acquire("streaming/pg19/x", 60)
    assert first.claim and first.holder is None and first.took_over is None
    second = store.acquire("streaming/pg19/x", 60)
    assert second.claim is None and second.holder.token == first.claim.token
    record = json.loads(store.path("streaming/pg19/x").read_text())
    assert record["host"] == platform.node() and record["pid"] == os.getpid() and record["started"] > 0
    store.release(first.claim)
    assert not store.path("streaming/pg19/x").exists()
    assert store.acquire("streaming/pg19/x", 60).claim is not None


def test_claim_of_a_dead_process_on_this_host_is_taken_over(tmp_path, dead_pid):
    store = ClaimStore(tmp_path)
    _write_claim(store, "c", pid=dead_pid, pid_start=None)
    got = store.acquire("c", 60)
    assert got.claim is not None and f"its process {dead_pid} on this host is gone" in got.took_over


def test_a_reused_pid_does_not_keep_a_claim_alive(tmp_path, live_process):
    store = ClaimStore(tmp_path)
    _write_claim(store, "c", pid=live_process.pid, pid_start=process_start(live_process.pid) - 1)
    assert store.acquire("c", 60).took_over is not None


def test_claim_of_a_live_process_stands_however_old(tmp_path, live_process):
    store = ClaimStore(tmp_path)
    _write_claim(store, "c", pid=live_process.pid, pid_start=process_start(live_process.pid), started=0, limit_s=1)
    assert store.acquire("c", 60).holder is not None


def test_claim_from_another_host_stands_until_its_time_limit(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    store = ClaimStore(tmp_path)
    _write_claim(store, "fresh", host="elsewhere", pid=1, started=time.time(), limit_s=3600)
    _write_claim(store, "old", host="elsewhere", pid=1, started=time.time() - 7200, limit_s=3600)
    assert store.acquire("fresh", 60).holder is not None
    assert "older than its time limit" in store.acquire("old", 60).took_over


def test_claim_of_a_requeued_slurm_job_is_taken_over_by_its_restart(tmp_path, monkeypatch, live_process):
    store = ClaimStore(tmp_path)
    _write_claim(store, "c", job_id="77", restart=0, pid=live_process.pid, host="node-a")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert "was requeued" in store.acquire("c", 60).took_over


def test_claim_of_a_job_slurm_no_longer_lists_is_taken_over(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setattr("longctx.executors.claims.job_in_queue", lambda job: False)
    store = ClaimStore(tmp_path)
    _write_claim(store, "c", job_id="12345", host="node-b", started=time.time())
    assert "Slurm job 12345 is no longer in the queue" in store.acquire("c", 60).took_over


def _measured_elsewhere(tmp_path, cell_id: str, holder_pid: int, value: int, after_s: float) -> threading.Thread:
    """Another runner: holds the claim (a live process of this host), writes the cell's result, then releases."""
    study = FakeStudy([])
    store = ClaimStore(tmp_path)
    claim = _write_claim(store, cell_id, pid=holder_pid, pid_start=process_start(holder_pid))

    def finish():
        time.sleep(after_s)
        cfg = study.config({"method": "lazy", "value": value})
        study.run(cfg, study.describe_inputs(cfg), tmp_path / f"{cell_id}.json")
        store.release(claim)

    thread = threading.Thread(target=finish)
    thread.start()
    return thread


def test_runner_waits_for_a_cell_another_runner_measures_and_does_not_measure_it(tmp_path, monkeypatch, capsys,
                                                                              live_process):  # fmt: skip
    calls = []
    _install_fake_study(monkeypatch, calls)
    monkeypatch.setattr(local, "POLL_S", 0.2)
    other = _measured_elsewhere(tmp_path, "fake/x/2", live_process.pid, 2, after_s=1.5)
    report = runner.run_plan(_plan([2, 1, 3]), tmp_path, ReusePolicy(), env={})  # 2 is claimed when reached
    other.join()
    assert calls == [1, 3]
    assert report.actions == {"fake/x/1": "run", "fake/x/2": "by_other", "fake/x/3": "run"}
    out = capsys.readouterr().out
    assert f"waiting for fake/x/2: being measured by host {platform.node()} pid {live_process.pid}" in out


def test_with_wait_claimed_0_a_claimed_cell_is_skipped_and_the_run_fails(tmp_path, monkeypatch, live_process):
    calls = []
    _install_fake_study(monkeypatch, calls)
    _write_claim(ClaimStore(tmp_path), "fake/x/2", pid=live_process.pid, pid_start=process_start(live_process.pid))
    report = runner.run_plan(_plan([1, 2]), tmp_path, ReusePolicy(), env={"WAIT_CLAIMED": "0"})
    assert calls == [1] and report.actions["fake/x/2"] == "claimed"
    with pytest.raises(RunFailure, match="1 cell"):
        raise_if_failed(report)


def test_claim_left_by_a_killed_runner_is_taken_over_and_said(tmp_path, monkeypatch, capsys, dead_pid):
    calls = []
    _install_fake_study(monkeypatch, calls)
    _write_claim(ClaimStore(tmp_path), "fake/x/1", pid=dead_pid, pid_start=None)
    report = runner.run_plan(_plan([1]), tmp_path, ReusePolicy(), env={})
    assert calls == [1] and report.actions == {"fake/x/1": "run"}
    captured = capsys.readouterr()
    assert f"took it over from host {platform.node()} pid {dead_pid}" in captured.out + captured.err
    assert not ClaimStore(tmp_path).path("fake/x/1").exists()
