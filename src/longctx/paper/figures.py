"""``longctx figures``: the paper's matplotlib figures (PDF, Agg backend) from the results of one plan.

PPL and TPOT vs R (the R sweep, one line per protocol), attribution time and memory vs output and prompt
length (log axes, one colour per method and one line style per protocol, measured points only), and KV length
over decode steps from the measured ``metrics.cache.kv_len_trace``. Output is deterministic (fixed rcParams, no
creation date, no hash salt).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
from matplotlib.lines import Line2D  # noqa: E402

from longctx.paper.attribution_tables import (  # noqa: E402
    CURVES,
    ORIGINAL,
    Curve,
    curve_grid,
    method_label,
    original_point,
    original_value,
    series_label,
    shows_original,
)
from longctx.paper.prediction_tables import ROOFLINE_LABEL, ROOFLINE_STYLE, draw_roofline, roofline_points  # noqa: E402
from longctx.paper.store import Report, ResultView  # noqa: E402
from longctx.plan import Plan  # noqa: E402

RC = {
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "lines.markersize": 3,
    "pdf.fonttype": 42,
    "svg.hashsalt": "longctx",
    "figure.dpi": 100,
}
PDF_METADATA = {"CreationDate": None, "Creator": "longctx", "Producer": "matplotlib"}
KV_METHODS = {"start_recent": "Start+Recent (strict)", "lazy": "Lazy"}


def save(fig, path: Path) -> Path:
    """Write a reproducible PDF (no creation date) and close the figure."""
    fig.savefig(path, format="pdf", metadata=PDF_METADATA, bbox_inches="tight")
    plt.close(fig)
    return path


def placeholder(ax, results_missing: bool, in_plan: bool = True) -> None:
    """Mark an empty panel: [INSERT DATA] when results are missing (listed by `paper all`), else say why."""
    if not in_plan:
        message = "not part of this run's plan"
    else:
        message = "[INSERT DATA]" if results_missing else "no measured points (see the table)"
    ax.text(0.5, 0.5, message, color="red", ha="center", va="center", transform=ax.transAxes)


PROTOCOL_STYLE = {"efficient": "o-", "reference": "s--"}


def sweep_r_figure(view: ResultView, out: Path) -> Path:
    """PPL and TPOT (mean, ± std when repeated) against the prune interval R on PG19, one line per protocol."""
    series, missing = {}, False
    for cell in view.group("sweep_R"):
        result = view.get(cell)
        missing |= result is None
        if result is not None:
            point = (cell.config["compress_every"], result.metrics.ppl, result.metrics.tpot_ms)
            series.setdefault(cell.config.get("protocol", "efficient"), []).append(point)
    fig, (ax_ppl, ax_tpot) = plt.subplots(1, 2, figsize=(5.5, 2.0))
    if series:
        for protocol, points in series.items():
            points.sort(key=lambda p: p[0])
            rs, style = [p[0] for p in points], PROTOCOL_STYLE[protocol]
            ax_ppl.plot(rs, [p[1] for p in points], style, label=protocol)
            ax_tpot.errorbar(rs, [p[2].mean for p in points], yerr=[p[2].std or 0 for p in points], fmt=style)
        for ax in (ax_ppl, ax_tpot):
            ax.set_xscale("log", base=2)
        if len(series) > 1:
            ax_ppl.legend(fontsize=6)
    else:
        for ax in (ax_ppl, ax_tpot):
            placeholder(ax, missing, bool(view.group("sweep_R")))
    ax_ppl.set(xlabel="R (compress_every)", ylabel="PPL")
    ax_tpot.set(xlabel="R (compress_every)", ylabel="TPOT (ms)")
    fig.tight_layout()
    return save(fig, out / "sweep_R.pdf")


ROOFLINE = "roofline"  # the legend entry of the predicted lower bounds (drawn per method and protocol)
SERIES_STYLES = {"efficient": ("o", "-"), "reference": ("s", "--"), ORIGINAL: ("x", ":")}  # marker, line


def series_style(series: str) -> dict:
    marker, line = SERIES_STYLES.get(series, ("o", "-"))
    return {"marker": marker, "linestyle": line}


def legend_handles(methods: list[str], colors: list[str], series: list[str]) -> list[Line2D]:
    """One colour entry per method, then one black entry per line style (series) drawn."""
    handles = [Line2D([], [], color=colors[i % len(colors)], label=method_label(m)) for i, m in enumerate(methods)]
    styles = [
        Line2D([], [], color="black", label=ROOFLINE_LABEL, **ROOFLINE_STYLE)
        if s == ROOFLINE
        else Line2D([], [], color="black", label=series_label(s), **series_style(s))
        for s in series
    ]
    return handles + styles


def series_points(view: ResultView, curve: Curve, grid, method: str, series: str):
    """(lengths, seconds, MiB) of one series' measured points, and whether a result file was missing."""
    xs, times, mems, missing = [], [], [], False
    for length in grid.lengths:
        if series == ORIGINAL:
            cell = original_point(method, curve, grid.fixed, length)
            if cell is not None and not cell.only_after_fatal and cell.outcome == "ok":
                xs.append(length)
                times.append(original_value(cell, "time"))
                mems.append(original_value(cell, "memory") / 2**20)
            continue
        if (method, series, length) not in grid.cells:
            continue
        result = view.get(grid.cells[(method, series, length)])
        missing |= result is None
        if result is not None and result.status == "ok":
            xs.append(length)
            times.append(result.metrics.time_sec.mean)
            mems.append(result.metrics.peak_mem.allocated_bytes.mean / 2**20)
    return xs, times, mems, missing


def attribution_figure(view: ResultView, curve: Curve, out: Path) -> Path:
    """Time and peak memory against one length, log-log: one colour per method, one line style per series
    (efficient, reference, and the original's measurement on the full profile); status-ok points only."""
    grid = curve_grid(view, curve)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(6.5, 2.6))
    plotted, missing, used_series = False, False, []
    roofline = roofline_points("full", curve.varies) if shows_original(view) else {}  # predictions, full only
    for index, method in enumerate(grid.methods):
        series = grid.series(method) + ([ORIGINAL] if shows_original(view) else [])
        for name in series:
            xs, times, mems, gap = series_points(view, curve, grid, method, name)
            missing |= gap
            if not xs:
                continue
            plotted = True
            if name not in used_series:
                used_series.append(name)
            style = {"color": colors[index % len(colors)], "linewidth": 0.9, **series_style(name)}
            ax_time.plot(xs, times, **style)
            ax_mem.plot(xs, mems, **style)
            if draw_roofline(ax_time, roofline, method, name, style["color"]) and ROOFLINE not in used_series:
                used_series.append(ROOFLINE)
    if plotted:
        for ax in (ax_time, ax_mem):
            ax.set_xscale("log")
            ax.set_yscale("log")
        handles = legend_handles(grid.methods, colors, used_series)
        ax_mem.legend(handles=handles, fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5))
    else:
        for ax in (ax_time, ax_mem):
            placeholder(ax, missing, bool(grid.methods))
    ax_time.set(xlabel=f"{curve.title} (tokens)", ylabel="time (s)")
    ax_mem.set(xlabel=f"{curve.title} (tokens)", ylabel="peak memory (MiB)")
    fig.tight_layout()
    return save(fig, out / f"attr_{curve.short}.pdf")


def kv_trace_figure(view: ResultView, out: Path) -> Path:
    """Measured KV-cache length per decode step on PG19: strict Start+Recent vs Lazy Pruning."""
    fig, ax = plt.subplots(figsize=(5.5, 2.0))
    plotted = missing = False
    pg19 = [c for c in view.group("main") if c.labels["dataset"] == "pg19"]
    cells = [c for c in pg19 if c.config["method"] in KV_METHODS]
    for cell in cells:
        result = view.get(cell)
        missing |= result is None
        trace = result.metrics.cache.kv_len_trace if result else []
        if trace:
            plotted = True
            steps, lengths = zip(*trace, strict=True)
            protocol = cell.config.get("protocol", "efficient")
            label = f"{KV_METHODS[cell.config['method']]}, {protocol}"
            style = "-" if protocol == "efficient" else "--"
            ax.step(steps, lengths, style, where="post", linewidth=0.7, label=label)
    if plotted:
        ax.legend(fontsize=7)
    else:
        placeholder(ax, missing, bool(cells))
    ax.set(xlabel="decode step", ylabel="KV length (entries)")
    fig.tight_layout()
    return save(fig, out / "kv_trace.pdf")


def generate_figures(plan: Plan, results_dir: str | Path, out_dir: str | Path) -> Report:
    """Write every figure PDF for ``plan`` into ``out_dir``; return the cells the figures lacked."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    view = ResultView(plan, results_dir)
    with plt.rc_context(RC):
        sweep_r_figure(view, out)
        for curve in CURVES:
            attribution_figure(view, curve, out)
        kv_trace_figure(view, out)
    return view.report
