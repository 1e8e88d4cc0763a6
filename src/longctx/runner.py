"""Run a plan through the result store: skip what is valid, rerun what is stale, errored or missing, resume.

The runner assesses every cell, hands the ones to measure to an executor (``longctx.executors``: this machine, one
or N at a time, or Slurm, one job per timing group), and ends with a summary by outcome: any cell not measured ok
(other than a documented skip or an out-of-memory result) is listed with the command that retries it, and the run
fails (exit 1). Every result is written atomically as soon as it is measured, each cell is claimed in the store
while it is measured (two runners never measure it twice), so an interrupted run loses nothing already written and
the next run resumes. A cell measured on a machine with another fingerprint identity is stale for timing purposes
(speedups never mix machines); for a baseline ``STRICT_BASELINE=1`` refuses instead of rerunning.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from longctx import knobs
from longctx.errors import RunFailure, UsageError
from longctx.executors.cells import (
    FAILED,
    LOG_DIR,
    NOT_OK,
    REUSE_STALE,
    SKIP,
    BaselineMismatch,
    Outcome,
    RunContext,
    Task,
    assess,
    result_path,
)
from longctx.plan import Plan
from longctx.results import Action, ReusePolicy, atomic_write_json, mark_stale, read_result
from longctx.studies import STUDIES
from longctx.study import Cell

EXECUTORS = ("local", "slurm")


@dataclass
class RunReport:
    """What became of every cell (``actions``: cell id -> outcome) and why the ones not ok are not."""

    actions: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    retry: str = ""

    def add(self, outcome: Outcome) -> None:
        self.actions[outcome.cell_id] = outcome.state
        if outcome.state in NOT_OK:
            self.failures[outcome.cell_id] = outcome.detail or outcome.state
        else:
            self.failures.pop(outcome.cell_id, None)

    def counts(self) -> Counter:
        return Counter(self.actions.values())

    def summary(self) -> str:
        parts = ", ".join(f"{n} {a}" for a, n in sorted(self.counts().items()))
        return f"{len(self.actions)} cells: {parts or 'nothing to do'}"

    def closing(self) -> str:
        """The summary line, then every cell not ok with why, and the command that retries them."""
        lines = [self.summary()]
        if self.failures:
            lines.append(f"not ok ({len(self.failures)}):")
            lines += [f"  {cell_id}: {why}" for cell_id, why in sorted(self.failures.items())]
            if self.retry:
                lines.append(f"retry them with: {self.retry}   (valid results are kept, only these cells rerun)")
        return "\n".join(lines)


def profile_dir(results_root: str | Path, profile: str) -> Path:
    """The result store of a profile: ``results/<profile>``."""
    return Path(results_root) / profile


def prepare_assets(plan: Plan) -> None:
    """Make the profile's local inputs exist and complete (tiny models and texts for smoke/timing, samples for full).

    Each is rebuilt when missing, interrupted or not matching its completeness marker (``longctx.generated_assets``).
    """
    from longctx.data.samples import SAMPLES_DIR, ensure_sample, ensure_smoke_text

    assets = plan.assets
    if assets.get("tiny_models"):
        from longctx.tiny import ensure_tiny_models

        ensure_tiny_models(assets["tiny_models"])
    for name, (n_words, seed) in assets.get("smoke_texts", {}).items():
        ensure_smoke_text(SAMPLES_DIR / f"smoke-{name}.json", n_words, seed)
    for name in assets.get("samples", []):
        ensure_sample(name)


def timing_groups(plan: Plan) -> dict[str, str]:
    """Each cell's timing group (``Study.timing_group``); groups sharing a cell are merged into one."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    first: dict[str, str] = {}
    for cell in plan.cells:
        group = root(STUDIES[cell.study].timing_group(cell))
        if cell.id in first and root(first[cell.id]) != group:
            parent[group] = root(first[cell.id])
        first.setdefault(cell.id, group)
    return {cell_id: root(group) for cell_id, group in first.items()}


def duration(seconds: float) -> str:
    """``45 s``, ``12 min`` or ``3.5 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 3 * 3600 else f"{seconds / 3600:.1f} h"


def retry_command(argv: list[str] | None = None) -> str:
    """The command line that started this run, to run it again."""
    argv = list(sys.argv if argv is None else argv)
    return shlex.join(["longctx", *argv[1:]])


def _executor(name: str, jobs: int, plan: Plan, tasks: list[Task], results_dir: Path, env: Mapping[str, str]):
    from longctx.estimate import estimate

    estimates = {t.cell.id: estimate(plan, t.cell) for t in tasks}
    logs = results_dir / LOG_DIR
    if name == "slurm":
        from longctx.executors.slurm import SlurmExecutor, SlurmSettings

        groups = timing_groups(plan)
        return SlurmExecutor(
            jobs, group_of=groups, estimates=estimates, settings=SlurmSettings.from_env(env), logs_dir=logs
        )
    from longctx.executors.local import LocalExecutor

    gpus = max((e.gpus for e in estimates.values()), default=0)
    return LocalExecutor(jobs, gpus_per_cell=gpus, wait_claimed=knobs.flag("WAIT_CLAIMED", True, env), logs_dir=logs)


def run_plan(
    plan: Plan,
    results_dir: str | Path,
    policy: ReusePolicy | None = None,
    *,
    dry_run: bool = False,
    env: Mapping[str, str] | None = None,
    stop_after: Callable[[dict], str | None] | None = None,
    executor: str = "local",
    jobs: int = 1,
) -> RunReport:
    """Run every cell that is missing, stale or errored; print one line per cell and the closing summary.

    ``stop_after(result)`` may return a reason to stop after a cell (its result is kept): RunFailure.
    """
    from longctx.estimate import estimate, time_limit_s
    from longctx.predict import runner_hooks
    from longctx.validate import validate_results_dir

    env = os.environ if env is None else env
    policy = ReusePolicy.from_env(env) if policy is None else policy
    if executor not in EXECUTORS:
        raise UsageError(f"--executor {executor!r}: choose {' or '.join(EXECUTORS)}")
    results_dir = Path(results_dir)
    ctx = RunContext(
        results_dir=str(results_dir),
        force=policy.force,
        allow_stale=policy.allow_stale,
        retry_oom=policy.retry_oom,
        strict_baseline=knobs.flag("STRICT_BASELINE", False, env),
        check_identity=executor == "local",
        started_at=time.time(),
    )
    report = RunReport(retry=retry_command())
    cells = plan.unique_cells()
    print(f"plan {plan.profile}: {len(cells)} cells ({plan.description})")
    gpu = runner_hooks.target_gpu(env)  # PREDICT_GPU or the visible GPU: predictions shown / OOM cells held back
    if dry_run:
        return _dry_run(cells, plan, ctx, report, gpu)
    validate_results_dir(results_dir)
    if executor == "slurm":
        from longctx.executors.slurm import SlurmSettings, require_slurm

        require_slurm()
        SlurmSettings.from_env(env)  # bad SLURM_* knobs: exit 2 now, not after the assets
    prepare_assets(plan)
    tasks = []
    for cell in cells:
        task = _assess_here(cell, ctx, report)
        if task is not None and runner_hooks.held_back(cell, gpu, env, report):
            continue
        if task is not None:
            tasks.append(dataclasses.replace(task, limit_s=time_limit_s(estimate(plan, cell).seconds)))
    if tasks:
        est = sum(estimate(plan, t.cell).seconds for t in tasks) / jobs
        where = "here" if executor == "local" else "on Slurm"
        print(f"{len(tasks)} cells to measure {where}, {jobs} at a time: rough estimate {duration(est)}")
    stopped: list[str] = []

    def on_outcome(outcome: Outcome) -> bool:
        report.add(outcome)
        print(f"[{len(report.actions)}/{len(cells)}] {outcome.line()}", flush=True)
        if stop_after and outcome.state not in NOT_OK:
            result = read_result(result_path(results_dir, _cell(cells, outcome.cell_id)))
            reason = stop_after(result.to_json()) if result is not None else None
            if reason:
                stopped.append(f"{outcome.cell_id}: {reason}")
                return False
        return True

    if tasks:
        _executor(executor, jobs, plan, tasks, results_dir, env).run(tasks, ctx, on_outcome)
    print(report.closing())
    if stopped:
        raise RunFailure(stopped[0])
    return report


def _cell(cells: list[Cell], cell_id: str) -> Cell:
    return next(c for c in cells if c.id == cell_id)


def _assess_here(cell: Cell, ctx: RunContext, report: RunReport) -> Task | None:
    """Settle what needs no measurement here (valid, reused stale, bad inputs); the cell's task otherwise."""
    try:
        a = assess(cell, ctx)
    except BaselineMismatch:
        raise
    except UsageError as exc:
        report.add(Outcome(cell.id, FAILED, f"cannot start: {exc}"))
        print(f"longctx: cell {cell.id} cannot start: {exc}", file=sys.stderr)
        return None
    if a.action is Action.SKIP:
        report.add(Outcome(cell.id, SKIP))
        return None
    if a.action is Action.REUSE_STALE:
        print(f"longctx: warning: ALLOW_STALE=1 reuses stale {cell.id}: {a.note}", file=sys.stderr)
        atomic_write_json(a.path, mark_stale(a.existing, a.note))
        report.add(Outcome(cell.id, REUSE_STALE, a.note or ""))
        return None
    return Task(cell, 0.0, a.expected_hash)


def _dry_run(cells: list[Cell], plan: Plan, ctx: RunContext, report: RunReport, gpu=None) -> RunReport:
    """Print what would run and a time estimate, with each cell's predicted peak and roofline time on ``gpu``;
    touches nothing (missing local inputs are reported, not made)."""
    from longctx.estimate import estimate

    for cell in cells:
        try:
            a = assess(cell, ctx)
            action, why = a.action.value, a.note
        except UsageError as exc:
            action, why = "run", f"inputs not prepared yet: {exc}"
        report.actions[cell.id] = action
        print(f"  {action:12s} {cell.id}" + (f"  ({why})" if why else ""))
        if gpu is not None:
            from longctx.predict.runner_hooks import dry_run_note

            print(f"  {'':12s} {dry_run_note(cell, gpu)}")
    to_run = [c for c in cells if report.actions[c.id] == "run"]
    est = sum(estimate(plan, c).seconds for c in to_run)
    print(f"dry run: {len(to_run)} cells would run (rough estimate {duration(est)}); nothing was run or written")
    return report

