"""One cell from start to finish, in whichever process measures it (the runner itself, a local worker, a Slurm job):
assess it against the store, claim it, measure it, classify its status, release the claim.

Every measurement is logged to ``<results>/logs/cells.jsonl`` (one JSON line when it starts and one when it ends,
with host, pid and Slurm job), so what was computed where, and how often, can be counted afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from longctx.errors import RunFailure, UsageError
from longctx.executors.claims import ClaimStore, slurm_job
from longctx.provenance import utc_now
from longctx.results import (
    Action,
    ReusePolicy,
    StoredResult,
    atomic_write_json,
    config_hash,
    decide,
    is_error,
    is_oom,
    mark_stale,
    read_result,
)
from longctx.studies import STUDIES
from longctx.study import Cell

LOG_DIR = "logs"
EVENTS_FILE = "cells.jsonl"

# What became of a cell in one run (the keys of the closing summary).
RAN = "run"  # measured now, status ok
SKIP = "skip"  # a valid result was already there
REUSE_STALE = "reuse_stale"
OOM = "oom"  # measured now (or predicted): out of memory, a kept result
SKIPPED = "skipped"  # measured now: skipped_* status (beyond the model's context, nonpositive prompt)
FAILED = "failed"  # an error status, an exception, or a worker/job that died
CLAIMED = "claimed"  # another runner is measuring it (WAIT_CLAIMED=0: not waited for)
BY_OTHER = "by_other"  # another runner measured it while this one waited
NOT_OK = (FAILED, CLAIMED)


class BaselineMismatch(UsageError):
    """STRICT_BASELINE=1 and the stored baseline came from another fingerprint identity: stop the whole run."""


@dataclass(frozen=True)
class RunContext:
    """What every process measuring cells of one run needs to know (JSON- and pickle-friendly)."""

    results_dir: str
    force: bool = False
    allow_stale: bool = False
    retry_oom: bool = False
    strict_baseline: bool = False
    check_identity: bool = True  # False where the runner is not the measuring machine (a Slurm submit host)
    started_at: float = 0.0  # epoch seconds: under FORCE, a result written after this came from another runner

    @property
    def policy(self) -> ReusePolicy:
        return ReusePolicy(force=self.force, allow_stale=self.allow_stale, retry_oom=self.retry_oom)

    def elsewhere(self) -> RunContext:
        """The same run as seen from a machine that cannot judge fingerprints (identity left to the node)."""
        return dataclasses.replace(self, check_identity=False)


@dataclass(frozen=True)
class Task:
    """One cell to bring up to date, with the time limit of its claim."""

    cell: Cell
    limit_s: float
    expected_hash: str = ""  # the config hash the runner expects (to follow progress from afar)

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "cell": dataclasses.asdict(self.cell)}

    @classmethod
    def from_json(cls, data: dict) -> Task:
        return cls(**{**data, "cell": Cell(**data["cell"])})


@dataclass
class Outcome:
    """What became of one cell (``state``: one of the constants above), why, and in how long."""

    cell_id: str
    state: str
    detail: str = ""
    seconds: float = 0.0

    def line(self) -> str:
        text = {RAN: "ran", SKIP: "valid", BY_OTHER: "measured by another runner"}.get(self.state, self.state)
        took = f" in {self.seconds:.1f}s" if self.seconds else ""
        return f"{text} {self.cell_id}{took}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class Assessment:
    """What the store says about one cell before anything runs."""

    cfg: object
    inputs: dict
    expected_hash: str
    path: Path
    existing: StoredResult | None
    action: Action
    note: str | None


def result_path(results_dir: str | Path, cell: Cell) -> Path:
    """Where a cell's result lives: ``<results_dir>/<cell id>.json``."""
    return Path(results_dir) / f"{cell.id}.json"


@cache
def identity_hash() -> str:
    """This process's machine fingerprint identity (computed once)."""
    from longctx.provenance import fingerprint

    return fingerprint()["identity_hash"]


def _identity_note(existing: StoredResult | None, cell: Cell, baseline: bool, strict: bool) -> str | None:
    """Why an otherwise valid result cannot be reused on this machine (None when it can)."""
    mine = identity_hash()
    if existing is None or existing.identity_hash == mine:
        return None
    theirs = existing.identity_hash
    if baseline and strict:
        raise BaselineMismatch(
            f"baseline {cell.id} was measured on another machine/software stack (fingerprint {theirs[:12]} "
            f"!= {mine[:12]}); STRICT_BASELINE=1 refuses to mix it: rerun with FORCE=1"
        )
    return f"measured under fingerprint {theirs[:12]}, this machine is {mine[:12]}"


def assess(cell: Cell, ctx: RunContext, *, warn=None) -> Assessment:
    """Decide skip / run / reuse-stale for one cell without running it (UsageError: its inputs are bad)."""
    study = STUDIES[cell.study]
    cfg = study.config(cell.config)
    inputs = study.describe_inputs(cfg)
    expected = config_hash(dataclasses.asdict(cfg), inputs)
    path = result_path(ctx.results_dir, cell)
    existing = read_result(path, warn=warn)
    policy = ctx.policy
    action, note = decide(existing, expected, policy), None
    if action is Action.SKIP and ctx.check_identity:
        note = _identity_note(existing, cell, study.is_baseline(cfg), ctx.strict_baseline)
        if note:
            action = Action.REUSE_STALE if policy.allow_stale else Action.RUN
    elif existing is not None and action is not Action.SKIP and not policy.force:
        note = rerun_reason(existing, expected, policy)
    return Assessment(cfg, inputs, expected, path, existing, action, note)


def rerun_reason(existing: StoredResult, expected_hash: str, policy: ReusePolicy) -> str:
    """Why a stored result is measured again, in the user's terms."""
    if existing.config_hash != expected_hash:
        return "config, code, model or data changed since it was measured"
    if is_oom(existing.status) and policy.retry_oom:
        return f"it ran out of memory ({existing.status}); RETRY_OOM=1 retries it"
    return f"its last run errored ({existing.status.splitlines()[0][:200]}); retrying"


def state_of(status: str) -> str:
    """The outcome of a freshly measured result, from its status."""
    if status == "ok":
        return RAN
    if is_oom(status):
        return OOM
    return FAILED if is_error(status) else SKIPPED


def log_event(results_dir: str | Path, event: str, cell_id: str, **fields) -> None:
    """Append one line to ``logs/cells.jsonl`` (one ``write`` of an O_APPEND file: lines never interleave)."""
    job, restart = slurm_job()
    record = {"time_utc": utc_now(), "event": event, "cell": cell_id, "host": platform.node(), "pid": os.getpid()}
    if job:
        record.update(slurm_job=job, restart=restart)
    line = json.dumps({**record, **fields}, default=str) + "\n"
    path = Path(results_dir) / LOG_DIR / EVENTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _measured_meanwhile(a: Assessment, ctx: RunContext) -> bool:
    """Whether another runner wrote this cell's result since this run assessed it (so it is not measured twice)."""
    existing = read_result(a.path, warn=lambda _: None)
    if existing is None or existing.config_hash != a.expected_hash or is_error(existing.status):
        return False
    if ctx.force:
        return a.path.stat().st_mtime >= ctx.started_at
    return decide(existing, a.expected_hash, ctx.policy) is Action.SKIP and (
        not ctx.check_identity or existing.identity_hash == identity_hash()
    )


def execute_cell(task: Task, ctx: RunContext, claims: ClaimStore, *, debug: bool = False) -> Outcome:
    """Bring one cell the runner found to measure up to date: claim and measure it, unless it has been measured
    meanwhile (``by_other``) or another runner is at it (``claimed``); ALLOW_STALE may reuse it instead."""
    cell = task.cell
    try:
        a = assess(cell, ctx)
    except BaselineMismatch:
        raise
    except UsageError as exc:
        return Outcome(cell.id, FAILED, f"cannot start: {exc}")
    if a.action is Action.SKIP:  # the runner found it to measure: another runner has measured it since
        return Outcome(cell.id, BY_OTHER)
    if a.action is Action.REUSE_STALE:
        print(f"longctx: warning: ALLOW_STALE=1 reuses stale {cell.id}: {a.note}", file=sys.stderr)
        atomic_write_json(a.path, mark_stale(a.existing, a.note))
        return Outcome(cell.id, REUSE_STALE, a.note or "")
    got = claims.acquire(cell.id, task.limit_s)
    if got.holder is not None:
        return Outcome(cell.id, CLAIMED, f"being measured by {got.holder.describe()}")
    try:
        if _measured_meanwhile(a, ctx):
            return Outcome(cell.id, BY_OTHER)
        if got.took_over:
            print(f"longctx: {cell.id}: {got.took_over}", file=sys.stderr, flush=True)
        outcome = _measure(cell, a, ctx, debug)
    finally:
        claims.release(got.claim)
    if got.took_over:
        outcome.detail = "; ".join(filter(None, (outcome.detail, got.took_over)))
    return outcome


def _measure(cell: Cell, a: Assessment, ctx: RunContext, debug: bool) -> Outcome:
    log_event(ctx.results_dir, "start", cell.id, reason=a.note)
    started = time.perf_counter()
    try:
        result = STUDIES[cell.study].run(a.cfg, a.inputs, a.path)
    except (UsageError, RunFailure, RuntimeError, ValueError, OSError) as exc:
        why = f"{type(exc).__name__}: {exc}".splitlines()[0]
        log_event(ctx.results_dir, "end", cell.id, state=FAILED, error=why)
        if debug:
            import traceback

            traceback.print_exc()
        return Outcome(cell.id, FAILED, why, time.perf_counter() - started)
    seconds = time.perf_counter() - started
    status = str(result.get("status", "ok"))
    state = state_of(status)
    if is_oom(status):
        from longctx.predict.runner_hooks import annotate_oom

        annotate_oom(cell, result, a.path, os.environ)
    log_event(ctx.results_dir, "end", cell.id, state=state, status=status, seconds=round(seconds, 3))
    detail = "" if state == RAN else status.splitlines()[0][:300]
    return Outcome(cell.id, state, (detail + (f"; {a.note}" if a.note else "")).strip("; "), seconds)
