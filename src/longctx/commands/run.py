"""`longctx run PLAN`: run a plan (or a slice of it) of one profile through the result store, here or on Slurm."""

from __future__ import annotations

from longctx import knobs
from longctx.errors import RunFailure, UsageError

# Slices of the plan a user can ask for by name (groups of cells).
SLICES = {
    "all": None,
    "baseline": None,
    "main": {"main"},
    "ablations": {"ablations"},
    "sweeps": {"sweep_R", "sweep_sigma", "sweep_delta", "sweep_delta_slack"},
    "profiling": {"profiling"},
    "time-curve": {"time_curve_output", "time_curve_prompt"},
}


def register(sub) -> None:
    p = sub.add_parser("run", help="run a plan of the selected profile (skips valid results, reruns stale ones)")
    p.add_argument("plan", choices=sorted(SLICES), help="which part of the plan")
    p.add_argument("--profile", default=None, help="smoke | timing | full (default: PROFILE or automatic)")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--dry-run", action="store_true", help="print what would run; run nothing (also DRY_RUN=1)")
    add_executor_flags(p)
    p.set_defaults(func=run)


def add_executor_flags(p) -> None:
    """``--executor`` and ``--jobs`` (defaults: the EXECUTOR and JOBS knobs)."""
    p.add_argument("--executor", default=None, help="local (this machine) or slurm (submitit); default EXECUTOR, local")
    p.add_argument("--jobs", type=int, default=None, help="cells at once, one GPU each (default JOBS or 1)")


def executor_choice(args) -> dict:
    """The executor and parallelism of a run: the flags, else the EXECUTOR/JOBS knobs, else local and 1."""
    from longctx.runner import EXECUTORS

    executor = args.executor or knobs.text("EXECUTOR", "local")
    if executor not in EXECUTORS:
        raise UsageError(f"executor {executor!r}: choose {' or '.join(EXECUTORS)} (--executor or EXECUTOR)")
    jobs = args.jobs if args.jobs is not None else knobs.integer("JOBS", 1, minimum=1)
    if jobs < 1:
        raise UsageError(f"--jobs {jobs}: must be >= 1")
    return {"executor": executor, "jobs": jobs}


def select_cells(plan, name: str):
    """Restrict a plan to the named slice (``baseline``: the cells the studies call baselines)."""
    from longctx.studies import STUDIES

    if name == "all":
        return plan
    if name == "baseline":
        plan.cells = [c for c in plan.cells if STUDIES[c.study].is_baseline(STUDIES[c.study].config(c.config))]
    else:
        plan.cells = [c for c in plan.cells if c.group in SLICES[name]]
    if not plan.cells:
        raise UsageError(f"plan slice {name!r} has no cells in profile {plan.profile} (check RUN_* knobs)")
    return plan


def run(args) -> int:
    from longctx.plan import load_plan, select_profile
    from longctx.runner import profile_dir, run_plan

    profile, why = select_profile(args.profile)
    print(f"profile: {profile} ({why})")
    plan = select_cells(load_plan(profile), args.plan)
    dry = args.dry_run or knobs.flag("DRY_RUN")
    report = run_plan(plan, profile_dir(args.results_dir, profile), dry_run=dry, **executor_choice(args))
    raise_if_failed(report)
    return 0


def raise_if_failed(report) -> None:
    """Exit 1 (RunFailure) when any cell is not ok; the report has listed them with the retry command."""
    if report.failures:
        raise RunFailure(f"{len(report.failures)} cell(s) not ok: {', '.join(sorted(report.failures))}")
