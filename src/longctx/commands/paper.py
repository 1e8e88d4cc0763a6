"""`longctx tables`, `longctx figures`, `longctx paper build|all`: results -> LaTeX + figures -> PDF.

Tables and figures read existing results only and report what is missing; `paper all` is the one command
that runs experiments (through the plan runner) before generating and building.
"""

from __future__ import annotations

import json
from pathlib import Path

from longctx import knobs
from longctx.commands.run import add_executor_flags, executor_choice, raise_if_failed
from longctx.errors import UsageError

DEFAULT_PAPER_DIR = "NeurIPS"


def register(sub) -> None:
    for name, func, help_text in (
        ("tables", tables, "generate NeurIPS/generated/*.tex from existing results (runs nothing)"),
        ("figures", figures, "generate NeurIPS/figures/*.pdf from existing results (runs nothing)"),
    ):
        p = sub.add_parser(name, help=help_text)
        _common(p)
        p.set_defaults(func=func)
    paper = sub.add_parser("paper", help="build the paper: `paper build` (PDF only) or `paper all`")
    verbs = paper.add_subparsers(dest="paper_command", required=True)
    build = verbs.add_parser("build", help="latexmk on NeurIPS/main.tex (reproducible)")
    build.add_argument("--profile", default=None, help="refuse generated files of another profile")
    build.add_argument("--paper-dir", default=DEFAULT_PAPER_DIR)
    build.set_defaults(func=build_command)
    everything = verbs.add_parser("all", help="run missing/stale cells, then tables, figures and the PDF")
    _common(everything)
    everything.add_argument(
        "--dry-run", action="store_true", help="print the plan, run nothing (or DRY_RUN=1)"
    )
    add_executor_flags(everything)
    everything.set_defaults(func=all_command)


def _common(p) -> None:
    p.add_argument("--profile", default=None, help="smoke | timing | full (default: PROFILE or automatic)")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--paper-dir", default=DEFAULT_PAPER_DIR)


def _plan(args):
    """Select the profile (saying which and why) and load its plan."""
    from longctx.plan import load_plan, select_profile

    profile, why = select_profile(args.profile)
    print(f"profile: {profile} ({why})")
    return load_plan(profile)


def _paper_dir(args) -> Path:
    paper_dir = Path(args.paper_dir)
    if not (paper_dir / "main.tex").exists():
        raise UsageError(f"{paper_dir / 'main.tex'} not found (run from the repo root or pass --paper-dir)")
    return paper_dir


def print_missing(missing: list[str], notes: list[str]) -> None:
    """The closing list of `paper all` / `paper build`: every missing cell id, then the notes."""
    for note in notes:
        print(f"note: {note}")
    if missing:
        print(f"missing cells ({len(missing)}), shown as [INSERT DATA]:")
        for cell_id in missing:
            print(f"  {cell_id}")
    else:
        print("no missing cells")


def _generate(kind: str, plan, args):
    from longctx.paper.figures import generate_figures
    from longctx.paper.tables import generate_tables
    from longctx.runner import profile_dir

    paper_dir = _paper_dir(args)
    results_dir = profile_dir(args.results_dir, plan.profile)
    if kind == "tables":
        report = generate_tables(plan, results_dir, paper_dir / "generated")
    else:
        report = generate_figures(plan, results_dir, paper_dir / "figures")
    print(f"{kind}: written to {paper_dir / ('generated' if kind == 'tables' else 'figures')}")
    return report


def tables(args) -> int:
    report = _generate("tables", _plan(args), args)
    print_missing(report.missing, report.notes)
    return 0


def figures(args) -> int:
    report = _generate("figures", _plan(args), args)
    print_missing(report.missing, report.notes)
    return 0


def _manifest(paper_dir: Path) -> dict:
    from longctx.paper.tables import MANIFEST

    path = paper_dir / "generated" / MANIFEST
    if not path.exists():
        raise UsageError(f"{path} not found: run `longctx tables` first")
    return json.loads(path.read_text(encoding="utf-8"))


def build_command(args) -> int:
    from longctx.paper.build import build_pdf

    paper_dir = _paper_dir(args)
    manifest = _manifest(paper_dir)
    if args.profile and manifest["profile"] != args.profile:
        raise UsageError(
            f"generated tables are for profile {manifest['profile']!r}, not {args.profile!r}: "
            f"run `longctx tables --profile {args.profile}` first"
        )
    print(f"building {paper_dir / 'main.pdf'} (latexmk)")
    print(f"built {build_pdf(paper_dir)}")
    print_missing(manifest["missing"], manifest["notes"])
    return 0


def all_command(args) -> int:
    """Profile -> run the plan -> tables -> figures -> PDF -> the list of missing cells."""
    from longctx.paper.build import INSTALL_HINT, build_pdf, missing_tex_tools
    from longctx.runner import profile_dir, run_plan

    paper_dir = _paper_dir(args)
    plan = _plan(args)
    results_dir = profile_dir(args.results_dir, plan.profile)
    run_with = executor_choice(args)
    if args.dry_run or knobs.flag("DRY_RUN"):
        run_plan(plan, results_dir, dry_run=True, **run_with)
        return 0
    run = run_plan(plan, results_dir, **run_with)
    report = _generate("tables", plan, args).merge(_generate("figures", plan, args))
    missing_tools = missing_tex_tools()
    if missing_tools:
        print(f"warning: {', '.join(missing_tools)} not found, no PDF; install TeX Live: {INSTALL_HINT}")
    else:
        print(f"building {paper_dir / 'main.pdf'} (latexmk)")
        print(f"built {build_pdf(paper_dir)}")
    print_missing(report.missing, report.notes)
    raise_if_failed(run)
    return 0
