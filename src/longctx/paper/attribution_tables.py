"""The attribution time-curve tables: time and peak memory per method as the output (or the prompt) grows.

Each method has one row per protocol of the plan (``efficient``: this artifact's code, ``reference``: the
original's code path) and, on the full profile, the original's own measurement (Qwen3-8B fp16 on six 80 GB
GPUs, ``longctx.original.attribution``). A cell that did not measure a number shows its status instead
(OOM, skip for context or nonpositive-input skips, err for runtime/init errors); only a cell without any
result file is missing.
"""

from __future__ import annotations

from dataclasses import dataclass

from longctx.attribution.method import methods
from longctx.errors import UsageError
from longctx.original.attribution import OriginalTimeCell, original_cell
from longctx.paper.latex import MISSING, escape, fmt_sig, fmt_summary_sig, mark
from longctx.paper.render import Table
from longctx.paper.store import ResultView
from longctx.results import StoredResult
from longctx.stats import Summary
from longctx.study import Cell

ORIGINAL = "original"
SERIES_LABELS = {"efficient": "efficient", "reference": "reference", ORIGINAL: "original (their GPUs)"}
PROTOCOL_ORDER = ("efficient", "reference")
GB = 1e9


def method_label(name: str) -> str:
    """The paper's label of a method (from the method registry)."""
    spec = methods().get(name)
    return spec.label if spec else name


def series_label(series: str) -> str:
    return SERIES_LABELS.get(series, series)


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

    @property
    def short(self) -> str:
        return "output" if self.varies == "output_len" else "prompt"

    def lengths_of(self, fixed: int, length: int) -> tuple[int, int]:
        """(prompt, output) of the point at ``length`` with the other length ``fixed``."""
        return (fixed, length) if self.varies == "output_len" else (length, fixed)


CURVES = (
    Curve("time_curve_output", "output_len", "prompt_len", "output length"),
    Curve("time_curve_prompt", "prompt_len", "output_len", "prompt length"),
)


@dataclass(frozen=True)
class CurveGrid:
    """The cells of one curve: methods and protocols in plan order, the varying lengths ascending."""

    methods: list[str]
    protocols: list[str]
    lengths: list[int]
    fixed: list[int]
    cells: dict[tuple[str, str, int], Cell]  # (method, protocol, length) -> cell

    def series(self, method: str) -> list[str]:
        """The protocols that have cells of ``method``."""
        return [p for p in self.protocols if any((method, p, n) in self.cells for n in self.lengths)]


def cell_protocol(cell: Cell) -> str:
    return cell.config.get("protocol", "efficient")


def curve_grid(view: ResultView, curve: Curve) -> CurveGrid:
    cells = view.group(curve.group)
    present = {cell_protocol(c) for c in cells}
    return CurveGrid(
        methods=list(dict.fromkeys(c.config["method"] for c in cells)),
        protocols=[p for p in PROTOCOL_ORDER if p in present] + sorted(present - set(PROTOCOL_ORDER)),
        lengths=sorted({c.config[curve.varies] for c in cells}),
        fixed=sorted({c.config[curve.fixed] for c in cells}),
        cells={(c.config["method"], cell_protocol(c), c.config[curve.varies]): c for c in cells},
    )


def shows_original(view: ResultView) -> bool:
    """The original's measurements sit next to this artifact's only on the full profile (same model)."""
    return view.plan.profile == "full"


def original_point(method: str, curve: Curve, fixed: list[int], length: int) -> OriginalTimeCell | None:
    """The original's preferred row at this point (None: never measured, or several fixed lengths)."""
    if len(fixed) != 1:
        return None
    try:
        return original_cell(method, *curve.lengths_of(fixed[0], length))
    except UsageError:  # a method the original did not have
        return None


def original_value(cell: OriginalTimeCell, quantity: str) -> float | None:
    """Seconds, or allocated bytes summed over its GPUs (ok runs), of an ok original row."""
    if quantity == "time":
        return cell.time_mean_s
    return None if cell.ok_peak_alloc_mean_gb is None else cell.ok_peak_alloc_mean_gb * GB


def status_text(status: str) -> str:
    """Short table text for a cell that has no number."""
    if status.startswith("oom"):
        return r"\statuscell{OOM}"
    if status.startswith("skipped"):
        return r"\statuscell{skip}"
    return r"\statuscell{err}"


def original_text(cell: OriginalTimeCell | None, quantity: str, scale: float) -> str:
    if cell is None:
        return "--"
    if cell.only_after_fatal:
        return r"\statuscell{n/r}"
    if cell.outcome != "ok":
        return status_text(cell.outcome)
    return fmt_sig(original_value(cell, quantity) * scale, 3)


def memory_unit(view: ResultView, cells: list[Cell]) -> tuple[str, float]:
    """GiB when any measured peak reaches 1 GiB, else MiB (one unit per table)."""
    results = [r for r in map(view.get, cells) if r is not None and r.status == "ok"]
    peaks = [memory_summary(r).mean for r in results]
    big = shows_original(view) or any(p and p >= 2**30 for p in peaks)
    return ("GiB", 2**30) if big else ("MiB", 2**20)


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


def method_rows(view: ResultView, curve: Curve, grid: CurveGrid, method: str, quantity: str, scale: float):
    """One row per series of ``method``: Method | series | a value per length."""
    metric = time_summary if quantity == "time" else memory_summary
    rows = []
    for protocol in grid.series(method):
        cells = [grid.cells.get((method, protocol, n)) for n in grid.lengths]
        rows.append([escape(series_label(protocol)), *(value_cell(view, c, metric, scale) for c in cells)])
    if shows_original(view):
        points = [original_point(method, curve, grid.fixed, n) for n in grid.lengths]
        rows.append([escape(series_label(ORIGINAL)), *(original_text(c, quantity, scale) for c in points)])
    return [[escape(method_label(method)) if i == 0 else "", *row] for i, row in enumerate(rows)]


CAPTION_SERIES = (
    "efficient: this artifact's implementation; reference: the original's code path (its inputs, loops, "
    "dtype and kernel). OOM: out of memory; skip: longer than the model's context; err: runtime error."
)
CAPTION_ORIGINAL = (
    " original: the original authors' measurement on six 80 GB GPUs (Qwen3-8B fp16, one process for the whole "
    "grid; n/r: never run genuinely, every run came after a fatal CUDA error)"
)


def curve_table(view: ResultView, curve: Curve, quantity: str) -> Table:
    """``quantity`` is ``time`` (seconds) or ``memory`` (peak allocated, MiB or GiB)."""
    grid = curve_grid(view, curve)
    fixed_text = ", ".join(str(v) for v in grid.fixed) or "--"
    if quantity == "time":
        scale, what = 1.0, "Wall-clock time (s) of one attribution"
        original = CAPTION_ORIGINAL + ", mean of its ok runs."
    else:
        unit, size = memory_unit(view, list(grid.cells.values()))
        scale, what = 1 / size, f"Peak memory allocated ({unit}) during one attribution"
        original = (
            CAPTION_ORIGINAL + r": \texttt{max\_memory\_allocated} summed over its GPUs, ok runs (it published "
            r"\texttt{max\_memory\_reserved} in GB; its methods after IG also carry IG's stale weight gradients)."
        )
    caption = f"{what} vs {curve.title} ({curve.fixed.replace('_len', '')} fixed at {fixed_text} tokens). "
    caption += CAPTION_SERIES + (original if shows_original(view) else "")
    return Table(
        name=f"attr_{quantity}_{curve.short}",
        caption=caption,
        label=f"tab:attr-{quantity}-{curve.short}",
        header=["Method", "Series", *(str(n) for n in grid.lengths)],
        align="ll" + "r" * len(grid.lengths),
        blocks=[method_rows(view, curve, grid, m, quantity, scale) for m in grid.methods],
    )


def attribution_tables(view: ResultView) -> list[Table]:
    return [curve_table(view, curve, q) for curve in CURVES for q in ("time", "memory")]
