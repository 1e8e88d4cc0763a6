"""The attribution time-curve tables: time and peak memory per method as the output (or the prompt) grows.

A cell that did not measure a number shows its status instead (OOM, skip for context or nonpositive-input
skips, err for runtime/init errors); only a cell without any result file is missing.
"""

from __future__ import annotations

from dataclasses import dataclass

from longctx.attribution.method import methods
from longctx.paper.latex import MISSING, escape, fmt_summary_sig, mark
from longctx.paper.render import Table
from longctx.paper.store import ResultView
from longctx.results import StoredResult
from longctx.stats import Summary
from longctx.study import Cell


def method_label(name: str) -> str:
    """The paper's label of a method (from the method registry)."""
    spec = methods().get(name)
    return spec.label if spec else name


def time_summary(result: StoredResult) -> Summary:
    return result.metrics.time_sec


def memory_summary(result: StoredResult) -> Summary:
    """Peak memory allocated (weights included), summed over devices."""
    return result.metrics.peak_mem.allocated_bytes


@dataclass(frozen=True)
class Curve:
    """One time-curve group: which length varies, which is held fixed."""

    group: str
    varies: str  # config key of the varying length
    fixed: str  # config key of the fixed length
    title: str


CURVES = (
    Curve("time_curve_output", "output_len", "prompt_len", "output length"),
    Curve("time_curve_prompt", "prompt_len", "output_len", "prompt length"),
)


def status_text(status: str) -> str:
    """Short table text for a cell that has no number."""
    if status.startswith("oom"):
        return r"\statuscell{OOM}"
    if status.startswith("skipped"):
        return r"\statuscell{skip}"
    return r"\statuscell{err}"


def curve_grid(view: ResultView, curve: Curve) -> tuple[list[str], list[int], dict[tuple[str, int], Cell]]:
    """Methods (plan order), the varying lengths (ascending) and the cell at each (method, length)."""
    cells = view.group(curve.group)
    methods = list(dict.fromkeys(c.config["method"] for c in cells))
    lengths = sorted({c.config[curve.varies] for c in cells})
    return methods, lengths, {(c.config["method"], c.config[curve.varies]): c for c in cells}


def memory_unit(view: ResultView, cells: list[Cell]) -> tuple[str, float]:
    """GiB when any measured peak reaches 1 GiB, else MiB (one unit per table)."""
    results = [r for r in map(view.get, cells) if r is not None and r.status == "ok"]
    peaks = [memory_summary(r).mean for r in results]
    return ("GiB", 2**30) if any(p and p >= 2**30 for p in peaks) else ("MiB", 2**20)


def value_cell(view: ResultView, cell: Cell | None, metric, scale: float) -> str:
    """``metric(result)`` (a Summary) formatted, or the cell's status, or ``--`` outside the grid."""
    if cell is None:
        return "--"
    result = view.get(cell)
    if result is None:
        return MISSING
    if result.status != "ok":
        return status_text(result.status)
    return mark(fmt_summary_sig(metric(result), 3, scale=scale), result)


def curve_table(view: ResultView, curve: Curve, quantity: str) -> Table:
    """``quantity`` is ``time`` (seconds) or ``memory`` (peak allocated, MiB or GiB)."""
    methods, lengths, grid = curve_grid(view, curve)
    cells = list(grid.values())
    fixed = sorted({c.config[curve.fixed] for c in cells})
    fixed_text = ", ".join(str(v) for v in fixed) or "--"
    if quantity == "time":
        metric, scale, what = time_summary, 1.0, "Wall-clock time (s) of one attribution"
    else:
        unit, scale = memory_unit(view, cells)
        metric, what = memory_summary, f"Peak memory allocated ({unit}) during one attribution"
        scale = 1 / scale
    rows = [
        [
            escape(method_label(m)),
            *(value_cell(view, grid.get((m, n)), metric, scale) for n in lengths),
        ]
        for m in methods
    ]
    short = "output" if curve.varies == "output_len" else "prompt"
    return Table(
        name=f"attr_{quantity}_{short}",
        caption=f"{what} vs {curve.title} ({curve.fixed.replace('_len', '')} fixed at {fixed_text} tokens). "
        "OOM: out of memory; skip: longer than the model's context; err: runtime error.",
        label=f"tab:attr-{quantity}-{short}",
        header=["Method", *(str(n) for n in lengths)],
        align="l" + "r" * len(lengths),
        blocks=[rows],
    )


def attribution_tables(view: ResultView) -> list[Table]:
    return [curve_table(view, curve, q) for curve in CURVES for q in ("time", "memory")]
