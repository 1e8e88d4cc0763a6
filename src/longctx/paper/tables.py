"""``longctx tables``: every generated LaTeX file of the paper from one plan's results, and what is missing.

Writes ``<out_dir>/*.tex`` (tables, macros, profile mark, environment) and ``manifest.json`` (profile,
missing cell ids, notes) so ``longctx paper build`` can repeat the missing list. Never runs an experiment.
"""

from __future__ import annotations

from pathlib import Path

from longctx.paper.attribution_tables import attribution_tables
from longctx.paper.fidelity_tables import claims_tex, departures_tex
from longctx.paper.latex import escape
from longctx.paper.macros import environment_tex, macros_tex, profile_tex
from longctx.paper.prediction_tables import compare_original_table
from longctx.paper.render import Table
from longctx.paper.store import Report, ResultView
from longctx.paper.streaming_tables import streaming_tables
from longctx.plan import Plan
from longctx.results import atomic_write_json

MANIFEST = "manifest.json"


def negative_results_table(plan: Plan) -> Table:
    """The qualitative negative results of the plan data (text, no measurements)."""
    rows = [[escape(r["idea"]), escape(r["outcome"]), escape(r["evidence"])] for r in plan.negative_results]
    return Table(
        name="negative_results",
        caption="Negative results (qualitative: reported by the original authors, "
        "not measured by this artifact).",
        label="tab:negative",
        header=["Idea", "Outcome", "Evidence"],
        align=r"*{3}{>{\raggedright\arraybackslash}p{0.3\linewidth}}",
        blocks=[rows],
        source="the plan's negative_results.json",
    )


def generate_tables(plan: Plan, results_dir: str | Path, out_dir: str | Path) -> Report:
    """Write every generated .tex file for ``plan`` and return the missing cells and notes."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    view = ResultView(plan, results_dir)
    tables = [*streaming_tables(view), *attribution_tables(view), negative_results_table(plan)]
    for table in [*tables, compare_original_table()]:
        table.write(out_dir)
    for name, text in (
        ("macros", macros_tex(view)),
        ("profile", profile_tex(view)),
        ("environment", environment_tex(view)),
        ("departures", departures_tex()),
        ("claims", claims_tex(plan, results_dir)),
    ):
        (out_dir / f"{name}.tex").write_text(text, encoding="utf-8")
    atomic_write_json(
        out_dir / MANIFEST,
        {"profile": plan.profile, "missing": view.report.missing, "notes": view.report.notes},
    )
    return view.report
