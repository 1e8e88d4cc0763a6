"""The Slurm executor: each timing group of cells is one job submitted through submitit, measured on one node.

A job asks for ``min(jobs, cells)`` GPUs (one per cell; on CPU that many cores), host memory and a time limit from
the cells' estimates (``longctx.estimate``), plus ``SLURM_PARTITION``, ``SLURM_ACCOUNT``, ``SLURM_QOS`` and
``SLURM_OPTS``. Inside, the local executor measures the group's cells through the shared result store (claims
included), so a group's cells are compared on one node, and a preempted or timed-out job is requeued by submitit's
checkpointing and resumes from the store. Jobs, their logs and submitit's files live under ``<results>/logs/slurm``;
``jobs.json`` there maps each group to its last job, so a restarted runner reattaches to jobs still queued instead
of submitting them again. ``SLURM_CONTAINER=artifact.sif`` runs every job inside the Apptainer image.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock
from submitit.helpers import Checkpointable

from longctx import knobs
from longctx.atomic_files import atomic_write_json
from longctx.errors import UsageError
from longctx.estimate import Estimate, time_limit_s
from longctx.executors.cells import FAILED, RAN, Outcome, RunContext, Task
from longctx.executors.claims import ClaimStore, job_in_queue
from longctx.executors.local import LocalExecutor, OnOutcome
from longctx.provenance import utc_now
from longctx.results import is_error, read_result

SLURM_DIR = "slurm"
INDEX = "jobs.json"
CONTAINER_RESULTS = "/opt/longctx/results"
CONTAINER_WORKDIR = "/opt/longctx"
CPUS_PER_GPU = 4
MAX_TIMEOUTS = 3  # requeues after a time-out or preemption before submitit gives up


def require_slurm() -> None:
    """Refuse the Slurm executor where Slurm cannot be reached (before any work)."""
    if shutil.which("sbatch") is None:
        raise UsageError("--executor slurm: no sbatch on PATH (a one-node Slurm here: scripts/slurm-local.sh start)")


@dataclass(frozen=True)
class SlurmSettings:
    """Where and how jobs are submitted (from the SLURM_* knobs)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    options: dict = field(default_factory=dict)
    container: str | None = None
    poll_s: float = 15.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SlurmSettings:
        return cls(
            partition=knobs.text("SLURM_PARTITION", None, env),
            account=knobs.text("SLURM_ACCOUNT", None, env),
            qos=knobs.text("SLURM_QOS", None, env),
            options=parse_options(knobs.text("SLURM_OPTS", "", env) or ""),
            container=knobs.text("SLURM_CONTAINER", None, env),
            poll_s=float(knobs.integer("SLURM_POLL_S", 15, env, minimum=1)),
        )


def parse_options(text: str) -> dict[str, str | None]:
    """``SLURM_OPTS="--constraint=a100 --exclusive"`` as sbatch parameters (``--key=value`` or ``--flag``)."""
    options: dict[str, str | None] = {}
    for token in shlex.split(text):
        if not token.startswith("--") or len(token) < 3:
            raise UsageError(f"SLURM_OPTS: {token!r} is not an sbatch option; write --key=value or --flag")
        key, _, value = token[2:].partition("=")
        options[key.replace("-", "_")] = value or None
    return options


def container_python(container: str, results_root: Path) -> str:
    """The job's Python inside the Apptainer image, with the result store bound in (at its own path too)."""
    root = shlex.quote(str(results_root.resolve()))
    return " ".join(
        [
            "apptainer exec --nv",
            f"--bind {root}:{CONTAINER_RESULTS}",
            f"--bind {root}:{root}",
            f"--pwd {CONTAINER_WORKDIR}",
            shlex.quote(container),
            "python",
        ]
    )


@dataclass(frozen=True)
class JobShape:
    """The resources of one group's job."""

    parallel: int
    gpus: int
    cpus: int
    mem_gb: int
    minutes: int

    @classmethod
    def of(cls, estimates: list[Estimate], jobs: int) -> JobShape:
        parallel = max(1, min(jobs, len(estimates)))
        gpus_per_cell = max(e.gpus for e in estimates)
        seconds = sum(e.seconds for e in estimates) / parallel
        return cls(
            parallel=parallel,
            gpus=gpus_per_cell * parallel,
            cpus=parallel * (CPUS_PER_GPU * gpus_per_cell if gpus_per_cell else 1),
            mem_gb=math.ceil(max(e.mem_gb for e in estimates) * parallel),
            minutes=math.ceil(time_limit_s(seconds) / 60),
        )

    def parameters(self, settings: SlurmSettings, name: str) -> dict:
        """submitit's SlurmExecutor parameters; SLURM_OPTS override any of them."""
        params = {
            "job_name": name,
            "time": self.minutes,
            "cpus_per_task": self.cpus,
            "mem": f"{self.mem_gb}GB",
            "gpus_per_node": self.gpus or None,
            "partition": settings.partition,
            "account": settings.account,
            "qos": settings.qos,
            "setup": [] if self.gpus else [f"export OMP_NUM_THREADS={max(1, self.cpus // self.parallel)}"],
        }
        params = {k: v for k, v in params.items() if v is not None and k not in settings.options}
        extra = dict(settings.options)
        return {**params, "additional_parameters": extra} if extra else params


class GroupJob(Checkpointable):
    """What one Slurm job runs: a timing group's cells, measured on this node by the local executor.

    On preemption or time-out submitit requeues the same object; the store skips what is already measured.
    """

    def __init__(self, group: str, tasks: list[Task], ctx: RunContext, parallel: int, gpus_per_cell: int):
        self.group, self.tasks, self.ctx = group, tasks, ctx
        self.parallel, self.gpus_per_cell = parallel, gpus_per_cell

    def __call__(self) -> dict[str, dict]:
        outcomes: dict[str, dict] = {}

        def record(outcome: Outcome) -> bool:
            print(outcome.line(), flush=True)
            outcomes[outcome.cell_id] = dataclasses.asdict(outcome)
            return True

        ctx = dataclasses.replace(self.ctx, check_identity=True)  # this node judges fingerprints
        logs = Path(ctx.results_dir) / "logs"
        LocalExecutor(self.parallel, gpus_per_cell=self.gpus_per_cell, logs_dir=logs).run(self.tasks, ctx, record)
        return outcomes


@dataclass
class _Submitted:
    group: str
    job: object  # submitit.slurm.slurm.SlurmJob
    tasks: list[Task]

    @property
    def job_id(self) -> str:
        return str(self.job.job_id)


class SlurmExecutor:
    """Timing groups as Slurm jobs; waits for them, shows progress, reattaches after a restart."""

    name = "slurm"

    def __init__(self, jobs: int, *, group_of: Mapping[str, str], estimates: Mapping[str, Estimate],
                 settings: SlurmSettings, logs_dir: Path):  # fmt: skip
        self.jobs, self.group_of, self.estimates, self.settings = jobs, group_of, estimates, settings
        self.folder = logs_dir / SLURM_DIR

    # -------------------------------------------------------------------------------------------- submitting

    def _executor(self, shape: JobShape, group: str, results_root: Path):
        import submitit

        python = container_python(self.settings.container, results_root) if self.settings.container else None
        executor = submitit.SlurmExecutor(folder=self.folder / "%j", max_num_timeout=MAX_TIMEOUTS, python=python)
        executor.update_parameters(**shape.parameters(self.settings, f"longctx-{group.replace('/', '-')}"))
        return executor

    def _submit(self, group: str, tasks: list[Task], ctx: RunContext) -> _Submitted:
        """Submit ``group``'s job and record it in ``jobs.json`` at once (a runner killed now finds it again)."""
        shape = JobShape.of([self.estimates[t.cell.id] for t in tasks], self.jobs)
        limit = shape.minutes * 60.0
        tasks = [dataclasses.replace(t, limit_s=limit) for t in tasks]
        gpus_per_cell = shape.gpus // shape.parallel
        executor = self._executor(shape, group, Path(ctx.results_dir).parent)
        with FileLock(str(self.folder / f"{INDEX}.lock")):
            job = executor.submit(GroupJob(group, tasks, ctx, shape.parallel, gpus_per_cell))
            index = _read_index(self.folder / INDEX)
            index[group] = {"job_id": str(job.job_id), "submitted_utc": utc_now(), "cells": len(tasks)}
            atomic_write_json(self.folder / INDEX, index)
        print(
            f"slurm: submitted job {job.job_id} for {group} ({len(tasks)} cells; {shape.gpus} GPU, {shape.cpus} CPU, "
            f"{shape.mem_gb} GB, {shape.minutes} min)",
            flush=True,
        )
        return _Submitted(group, job, tasks)

    def _reattach(self, group: str, job_id: str, tasks: list[Task]) -> _Submitted | None:
        """The job a previous runner submitted for ``group``, while Slurm still has it; None otherwise."""
        import submitit

        if not job_in_queue(job_id):
            return None
        job = submitit.SlurmJob(folder=self.folder / "%j", job_id=job_id)
        try:
            covered = {t.cell.id for t in job.submission().function.tasks}
        except Exception:  # noqa: BLE001 - an unreadable submission: follow the job, resubmit what it lacks later
            covered = set()
        print(f"slurm: reattached to job {job_id} for {group} (submitted by an earlier run)", flush=True)
        return _Submitted(group, job, [t for t in tasks if t.cell.id in covered])

    def _start(self, by_group: dict[str, list[Task]], ctx: RunContext) -> list[_Submitted]:
        """Reattach to each group's job of an earlier run while Slurm still has it, else submit one."""
        self.folder.mkdir(parents=True, exist_ok=True)
        index = _read_index(self.folder / INDEX)
        submitted = []
        for group, tasks in by_group.items():
            known = index.get(group, {}).get("job_id")
            sub = self._reattach(group, known, tasks) if known else None
            submitted.append(sub if sub is not None and sub.tasks else self._submit(group, tasks, ctx))
        return submitted

    # -------------------------------------------------------------------------------------------- waiting

    def run(self, tasks: list[Task], ctx: RunContext, on_outcome: OnOutcome) -> None:
        if not tasks:
            return
        import submitit
        from submitit.slurm.slurm import SlurmInfoWatcher

        watcher = submitit.SlurmJob.watcher = SlurmInfoWatcher(delay_s=int(self.settings.poll_s))
        by_group: dict[str, list[Task]] = {}
        for task in tasks:
            by_group.setdefault(self.group_of[task.cell.id], []).append(task)
        active = self._start(by_group, ctx)
        pending = {t.cell.id: t for t in tasks}
        claims, stopping, last, failed = ClaimStore(ctx.results_dir), False, "", 0
        try:
            while active:
                watcher.update()  # one sacct for every job (a job that ended without a result needs it)
                for sub in [s for s in active if s.job.done()]:
                    active.remove(sub)
                    for outcome in self._outcomes(sub, pending, ctx):
                        del pending[outcome.cell_id]
                        failed += outcome.state == FAILED
                        stopping |= not on_outcome(outcome)
                    left = [t for t in by_group[sub.group] if t.cell.id in pending]
                    if left and not stopping:
                        active.append(self._submit(sub.group, left, ctx))
                if stopping:
                    for sub in active:
                        sub.job.cancel(check=False)
                    break
                line = self._progress(tasks, pending, active, claims, ctx) + f", {failed} failed"
                if line != last:
                    print(line, flush=True)
                    last = line
                if active:
                    time.sleep(self.settings.poll_s)
        except KeyboardInterrupt:
            ids = ", ".join(s.job_id for s in active)
            print(f"slurm: jobs {ids} keep running; run the same command again to follow them", file=sys.stderr)
            raise

    def _outcomes(self, sub: _Submitted, pending: dict[str, Task], ctx: RunContext) -> list[Outcome]:
        """What a finished job did to each of its cells still pending here."""
        try:
            reported = {cid: Outcome(**o) for cid, o in sub.job.result().items()}
            why = "its job did not report it"
        except Exception as exc:  # noqa: BLE001 - cancelled, failed, timed out too often: say so per cell
            reported = {}
            log = self.folder / sub.job_id / f"{sub.job_id}_0_log.err"
            why = f"Slurm job {sub.job_id} ended without finishing it ({type(exc).__name__}); log: {log}"
        out = []
        for task in sub.tasks:
            cid = task.cell.id
            if cid not in pending:
                continue
            if cid in reported:
                outcome = reported[cid]
                outcome.detail = "; ".join(filter(None, (outcome.detail, f"Slurm job {sub.job_id}")))
            elif _measured(ctx, task):
                outcome = Outcome(cid, RAN, f"Slurm job {sub.job_id}")
            else:
                outcome = Outcome(cid, FAILED, why)
            out.append(outcome)
        return out

    def _progress(self, tasks, pending, active, claims: ClaimStore, ctx: RunContext) -> str:
        """``slurm: D done, R running (job: cell), Q queued (jobs)`` over this run's cells."""
        running, queued = [], []
        for sub in active:
            for task in sub.tasks:
                cid = task.cell.id
                if cid not in pending or _measured(ctx, task):
                    continue
                holder = claims.read(cid)
                if holder is not None and holder.job_id:
                    running.append(f"job {holder.job_id}: {cid}")
                else:
                    queued.append(sub.job_id)
        done = len(tasks) - len(pending) + sum(1 for cid in pending if _measured(ctx, _task(tasks, cid)))
        jobs = ", ".join(sorted(set(queued)))
        return (
            f"slurm: {done} done, {len(running)} running"
            + (f" ({'; '.join(running)})" if running else "")
            + f", {len(queued)} queued"
            + (f" (jobs {jobs})" if jobs else "")
        )


def _task(tasks: list[Task], cell_id: str) -> Task:
    return next(t for t in tasks if t.cell.id == cell_id)


def _measured(ctx: RunContext, task: Task) -> bool:
    """Whether the store now holds a kept result of the cell with the hash this run expects."""
    from longctx.executors.cells import result_path

    existing = read_result(result_path(ctx.results_dir, task.cell), warn=lambda _: None)
    return existing is not None and existing.config_hash == task.expected_hash and not is_error(existing.status)


def _read_index(path: Path) -> dict:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
