"""Run a plan through the result store: skip what is valid, rerun what is stale or missing, resume.

Every cell is written atomically as soon as it finishes, so an interrupted run (Ctrl-C, kill, OOM)
loses nothing already written and the next run resumes. A cell measured on a machine with another
fingerprint identity is stale for timing purposes (speedups never mix machines); for a baseline
``STRICT_BASELINE=1`` refuses instead of rerunning.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from longctx import knobs
from longctx.data.samples import SAMPLES_DIR
from longctx.errors import RunFailure, UsageError
from longctx.plan import Plan
from longctx.results import (
    Action,
    ReusePolicy,
    StoredResult,
    atomic_write_json,
    config_hash,
    decide,
    mark_stale,
    read_result,
)
from longctx.studies import STUDIES
from longctx.study import Cell


class BaselineMismatch(UsageError):
    """STRICT_BASELINE=1 and the stored baseline came from another fingerprint identity: stop the whole run."""


@dataclass
class RunReport:
    actions: dict[str, str] = field(default_factory=dict)  # cell id -> run | skip | reuse_stale | failed | ...
    failures: dict[str, str] = field(default_factory=dict)

    def counts(self) -> Counter:
        return Counter(self.actions.values())

    def summary(self) -> str:
        parts = ", ".join(f"{n} {a}" for a, n in sorted(self.counts().items()))
        return f"{len(self.actions)} cells: {parts or 'nothing to do'}"


def result_path(results_dir: Path, cell: Cell) -> Path:
    """Where a cell's result lives: ``<results_dir>/<cell id>.json``."""
    return Path(results_dir) / f"{cell.id}.json"


def profile_dir(results_root: str | Path, profile: str) -> Path:
    """The result store of a profile: ``results/<profile>``."""
    return Path(results_root) / profile


def _identity_check(existing: StoredResult | None, identity_hash: str, cell: Cell, baseline: bool, strict: bool):
    """Why an otherwise valid result cannot be reused on this machine (None when it can)."""
    if existing is None or existing.identity_hash == identity_hash:
        return None
    theirs = existing.identity_hash
    if baseline and strict:
        raise BaselineMismatch(
            f"baseline {cell.id} was measured on another machine/software stack (fingerprint {theirs[:12]} "
            f"!= {identity_hash[:12]}); STRICT_BASELINE=1 refuses to mix it: rerun with FORCE=1"
        )
    return f"measured under fingerprint {theirs[:12]}, this machine is {identity_hash[:12]}"


def prepare_assets(plan: Plan) -> None:
    """Make the profile's local inputs exist: tiny models and synthetic texts (smoke/timing), real samples (full)."""
    assets = plan.assets
    tiny = assets.get("tiny_models")
    if tiny and not (Path(tiny) / "tiny-qwen3" / "config.json").exists():
        from longctx.tiny import make_tiny

        print(f"preparing tiny models in {tiny} (seeded, about a minute on CPU)")
        make_tiny(tiny)
    texts = assets.get("smoke_texts", {})
    if texts:
        from longctx.data.samples import write_smoke_text

        for name, (n_words, seed) in texts.items():
            path = SAMPLES_DIR / f"smoke-{name}.json"
            if not path.exists():
                write_smoke_text(path, n_words, seed)
    for name in assets.get("samples", []):
        path = SAMPLES_DIR / f"{name}.json"
        if not path.exists():
            from longctx.data.samples import materialize_sample

            materialize_sample(name)


@dataclass
class Assessment:
    """What the store says about one cell before anything runs."""

    cfg: object
    inputs: dict
    path: Path
    existing: StoredResult | None
    action: Action
    note: str | None


def assess(cell: Cell, results_dir: Path, policy: ReusePolicy, identity_hash: str, env) -> Assessment:
    """Decide skip / run / reuse-stale for one cell without running it."""
    study = STUDIES[cell.study]
    cfg = study.config(cell.config)
    inputs = study.describe_inputs(cfg)
    expected = config_hash(dataclasses.asdict(cfg), inputs)
    path = result_path(results_dir, cell)
    existing = read_result(path)
    action, note = decide(existing, expected, policy), None
    if action is Action.SKIP:
        strict = knobs.flag("STRICT_BASELINE", False, env)
        note = _identity_check(existing, identity_hash, cell, study.is_baseline(cfg), strict)
        if note:
            action = Action.REUSE_STALE if policy.allow_stale else Action.RUN
    elif action is Action.REUSE_STALE or (action is Action.RUN and existing is not None):
        note = "config, code, model or data changed since it was measured"
    return Assessment(cfg, inputs, path, existing, action, note)


def run_plan(
    plan: Plan,
    results_dir: str | Path,
    policy: ReusePolicy | None = None,
    *,
    dry_run: bool = False,
    env: Mapping[str, str] | None = None,
    stop_after: Callable[[dict], str | None] | None = None,
) -> RunReport:
    """Run every cell that is missing or stale; print one line per cell and a summary.

    ``stop_after(result)`` may return a reason to stop after a cell (its result is kept): RunFailure.
    """
    from tqdm import tqdm

    from longctx.predict import runner_hooks
    from longctx.provenance import fingerprint

    env = os.environ if env is None else env
    policy = ReusePolicy.from_env(env) if policy is None else policy
    results_dir = Path(results_dir)
    if not dry_run:
        prepare_assets(plan)
    identity_hash = fingerprint()["identity_hash"]
    report = RunReport()
    cells = plan.unique_cells()
    print(f"plan {plan.profile}: {len(cells)} cells ({plan.description})")
    gpu = runner_hooks.target_gpu(env)  # PREDICT_GPU or the visible GPU: predictions shown / OOM cells held back
    if dry_run:
        return _dry_run(cells, plan, results_dir, policy, identity_hash, env, report, gpu)
    pending = [c for c in cells if not result_path(results_dir, c).exists()]
    if pending:
        est = sum(plan.est_seconds.get(c.study, 0) for c in pending)
        print(f"{len(pending)} cells have no result yet: rough estimate {est / 60:.0f} min (stale cells add to it)")
    bar = tqdm(cells, unit="cell", file=sys.stderr)
    for cell in bar:
        bar.set_postfix_str(cell.id[-40:])
        try:
            a = assess(cell, results_dir, policy, identity_hash, env)
        except BaselineMismatch:
            raise
        except UsageError as exc:
            report.actions[cell.id] = "failed"
            report.failures[cell.id] = str(exc)
            print(f"longctx: cell {cell.id} cannot start: {exc}", file=sys.stderr)
            continue
        if a.action is Action.SKIP:
            report.actions[cell.id] = "skip"
            continue
        if a.action is Action.REUSE_STALE:
            print(f"longctx: warning: ALLOW_STALE=1 reuses stale {cell.id}: {a.note}", file=sys.stderr)
            atomic_write_json(a.path, mark_stale(a.existing, a.note))
            report.actions[cell.id] = "reuse_stale"
            continue
        predicted = runner_hooks.skip_prediction(cell, gpu, env)
        if predicted is not None:
            report.actions[cell.id] = runner_hooks.PREDICTED_OOM
            bar.write(f"not launched {cell.id}: {runner_hooks.summary(predicted)} (RUN_PREDICTED_OOM=1 runs it)")
            continue
        started = time.perf_counter()
        try:
            result = STUDIES[cell.study].run(a.cfg, a.inputs, a.path)
        except (UsageError, RunFailure, RuntimeError, ValueError, OSError) as exc:
            report.actions[cell.id] = "failed"
            report.failures[cell.id] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            print(f"longctx: cell {cell.id} failed: {report.failures[cell.id]}", file=sys.stderr)
            if env.get("LONGCTX_DEBUG"):
                traceback.print_exc()
            continue
        report.actions[cell.id] = "run"
        bar.write(f"ran {cell.id} in {time.perf_counter() - started:.1f}s" + (f" ({a.note})" if a.note else ""))
        reason = stop_after(result) if stop_after else None
        if reason:
            print(report.summary())
            raise RunFailure(f"{cell.id}: {reason}")
    print(report.summary())
    return report


def _dry_run(cells, plan, results_dir, policy, identity_hash, env, report: RunReport, gpu=None) -> RunReport:
    """Print what would run and a time estimate, with each cell's predicted peak and roofline time on ``gpu``;
    touches nothing (missing local inputs are reported, not made)."""
    for cell in cells:
        try:
            a = assess(cell, results_dir, policy, identity_hash, env)
            action, why = a.action.value, a.note
        except UsageError as exc:
            action, why = "run", f"inputs not prepared yet: {exc}"
        report.actions[cell.id] = action
        print(f"  {action:12s} {cell.id}" + (f"  ({why})" if why else ""))
        if gpu is not None:
            from longctx.predict.runner_hooks import dry_run_note

            print(f"  {'':12s} {dry_run_note(cell, gpu)}")
    to_run = [c for c in cells if report.actions[c.id] == "run"]
    est = sum(plan.est_seconds.get(c.study, 0) for c in to_run)
    print(f"dry run: {len(to_run)} cells would run (rough estimate {est / 60:.0f} min); nothing was run or written")
    return report
