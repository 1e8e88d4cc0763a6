"""Per-cell claims: whoever computes a cell first writes ``<results>/.claims/<cell id>.claim`` (host, pid, Slurm job,
start time, time limit), so that runners sharing a result store (two ``make paper``, a local run beside a Slurm
run) never compute one cell twice.

Claims are read and written under one short mutex per store (``filelock``: ``flock``, released by the kernel if its
holder dies). A claim is stale, and taken over with one line saying why, when its process is gone on this host
(pid and process start time checked, so a reused pid does not count), when its Slurm job is no longer in the queue
or was requeued, or, where neither can be checked, when it is older than its time limit.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock

from longctx.atomic_files import atomic_write_json

CLAIMS_DIR = ".claims"
SUFFIX = ".claim"


def process_start(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def process_alive(pid: int, started: int | None) -> bool:
    """Whether ``pid`` is the very process that made a claim (same start time where /proc tells it)."""
    if Path("/proc").is_dir():
        now = process_start(pid)
        return now is not None and (started is None or now == started)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def slurm_job() -> tuple[str | None, int]:
    """This process's Slurm job (``JOBID`` or ``ARRAYID_TASK``) and restart count, or (None, 0) outside Slurm."""
    env = os.environ
    job = env.get("SLURM_JOB_ID")
    if job and env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return job, int(env.get("SLURM_RESTART_COUNT") or 0)


def job_in_queue(job_id: str) -> bool | None:
    """Whether Slurm still lists ``job_id`` (pending, running, requeued); None when Slurm cannot be asked."""
    if shutil.which("squeue") is None:
        return None
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode:
        return False if "Invalid job id" in out.stderr else None
    states = set(out.stdout.split())
    return bool(states - {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED"})


@dataclass(frozen=True)
class Claim:
    """Who computes a cell, since when, and for how long at most."""

    cell_id: str
    host: str
    pid: int
    pid_start: int | None
    job_id: str | None
    restart: int
    started: float  # epoch seconds
    limit_s: float
    token: str

    @classmethod
    def mine(cls, cell_id: str, limit_s: float) -> Claim:
        job, restart = slurm_job()
        pid, host, token = os.getpid(), platform.node(), uuid.uuid4().hex
        return cls(cell_id, host, pid, process_start(pid), job, restart, time.time(), limit_s, token)

    def describe(self) -> str:
        job = f", Slurm job {self.job_id}" if self.job_id else ""
        since = time.strftime("%H:%M:%S", time.localtime(self.started))
        return f"host {self.host} pid {self.pid}{job}, since {since}"

    def stale_reason(self, now: float | None = None) -> str | None:
        """Why this claim no longer stands (its owner is gone), or None while it does."""
        now = time.time() if now is None else now
        job, restart = slurm_job()
        if self.job_id and self.job_id == job and restart > self.restart:
            return f"its Slurm job {job} was requeued (restart {restart})"
        if self.host == platform.node():
            if process_alive(self.pid, self.pid_start):
                return None
            return f"its process {self.pid} on this host is gone"
        if self.job_id:
            queued = job_in_queue(self.job_id)
            if queued is False:
                return f"its Slurm job {self.job_id} is no longer in the queue"
            if queued:
                return None
        if now - self.started > self.limit_s:
            return f"it is older than its time limit ({self.limit_s / 3600:.1f} h)"
        return None


@dataclass(frozen=True)
class Acquired:
    """The answer to a claim: ours (``claim``, and whom we ``took_over`` from, if anyone) or someone else's."""

    claim: Claim | None
    holder: Claim | None
    took_over: str | None


class ClaimStore:
    """The claims of one result store (``results_dir``)."""

    def __init__(self, results_dir: str | Path):
        self.dir = Path(results_dir) / CLAIMS_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self._mutex = FileLock(str(self.dir / ".mutex"))

    def path(self, cell_id: str) -> Path:
        return self.dir / f"{cell_id}{SUFFIX}"

    def read(self, cell_id: str) -> Claim | None:
        """The claim on ``cell_id`` (an unreadable one counts as none: claims are written atomically)."""
        try:
            return Claim(**json.loads(self.path(cell_id).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    def acquire(self, cell_id: str, limit_s: float) -> Acquired:
        """Claim ``cell_id`` unless someone else holds a claim on it that still stands."""
        with self._mutex:
            holder = self.read(cell_id)
            took_over = None
            if holder is not None:
                why = holder.stale_reason()
                if why is None:
                    return Acquired(None, holder, None)
                took_over = f"took it over from {holder.describe()}: {why}"
            mine = Claim.mine(cell_id, limit_s)
            atomic_write_json(self.path(cell_id), asdict(mine))
            return Acquired(mine, None, took_over)

    def release(self, claim: Claim) -> None:
        """Drop ``claim`` if it is still ours (a takeover may have replaced it)."""
        with self._mutex:
            current = self.read(claim.cell_id)
            if current is not None and current.token == claim.token:
                self.path(claim.cell_id).unlink(missing_ok=True)

    def live_holder(self, cell_id: str) -> Claim | None:
        """The claim on ``cell_id`` while it stands; None when there is none or it is stale."""
        holder = self.read(cell_id)
        return holder if holder is not None and holder.stale_reason() is None else None
