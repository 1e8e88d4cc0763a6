"""``longctx figures``: the paper's matplotlib figures (PDF, Agg backend) from the results of one plan.

PPL and TPOT vs R (the R sweep, one line per protocol), attribution time and memory vs output and prompt
length (log axes, one line per method, measured points only), and KV length over decode steps from the measured
``metrics.cache.kv_len_trace``. Output is deterministic (fixed rcParams, no creation date, no hash salt).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

from longctx.paper.attribution_tables import CURVES, Curve, curve_grid, method_label  # noqa: E402
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


def attribution_figure(view: ResultView, curve: Curve, out: Path) -> Path:
    """Time and peak memory against one length, log-log, one line per method (status-ok points only)."""
    methods, lengths, grid = curve_grid(view, curve)
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(6.5, 2.4))
    plotted = missing = False
    for method in methods:
        xs, times, mems = [], [], []
        for length in lengths:
            if (method, length) not in grid:
                continue
            result = view.get(grid[(method, length)])
            missing |= result is None
            if result is not None and result.status == "ok":
                xs.append(length)
                times.append(result.metrics.time_sec.mean)
                mems.append(result.metrics.peak_mem.allocated_bytes.mean / 2**20)
        if xs:
            plotted = True
            label = method_label(method)
            ax_time.plot(xs, times, "o-", label=label)
            ax_mem.plot(xs, mems, "o-", label=label)
    if plotted:
        for ax in (ax_time, ax_mem):
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax_mem.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5))
    else:
        for ax in (ax_time, ax_mem):
            placeholder(ax, missing, bool(methods))
    ax_time.set(xlabel=f"{curve.title} (tokens)", ylabel="time (s)")
    ax_mem.set(xlabel=f"{curve.title} (tokens)", ylabel="peak memory (MiB)")
    fig.tight_layout()
    short = "output" if curve.varies == "output_len" else "prompt"
    return save(fig, out / f"attr_{short}.pdf")


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
