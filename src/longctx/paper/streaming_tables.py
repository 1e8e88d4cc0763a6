"""The streaming study's tables: main (PG19, WikiText), ablations, R/σ/δ sweeps and prune-overhead profiling.

Speedup = baseline TPOT / method TPOT, both from the same dataset; it is computed only when the baseline and
the method share a fingerprint identity (otherwise it prints as missing with a note), and it carries the
stale mark when either side is a stale result reused under ALLOW_STALE=1.
"""

from __future__ import annotations

from longctx.paper.latex import MISSING, escape, fmt_fixed, fmt_sig, fmt_summary, fmt_summary_sig, mark
from longctx.paper.render import MISMATCH_MARK, Table
from longctx.paper.store import ResultView
from longctx.results import StoredResult
from longctx.stats import Summary
from longctx.study import Cell

GIB = 2**30
SPEEDUP_DEF = r"Speedup $=$ baseline TPOT $/$ method TPOT (same dataset, same fingerprint)."
DATASET_NAMES = {"pg19": "PG19", "wikitext": "WikiText-103"}
LAZY_KNOBS = ("compress_every", "cache_slack", "max_drop")


def tpot(result: StoredResult | None) -> Summary | None:
    return None if result is None else result.metrics.tpot_ms


def ppl(result: StoredResult | None) -> float | None:
    return None if result is None else result.metrics.ppl


def speedup(result: StoredResult | None, baseline: StoredResult | None) -> float | None:
    """baseline TPOT / method TPOT, or None when either is missing or their fingerprints differ."""
    if not (tpot(result) and tpot(baseline)) or result.identity_hash != baseline.identity_hash:
        return None
    return tpot(baseline).mean / tpot(result).mean


def fmt_speedup(view: ResultView, cell: Cell, result: StoredResult | None, baseline: StoredResult | None) -> str:
    if result is None or baseline is None:
        return MISSING
    value = speedup(result, baseline)
    if value is None:
        view.report.add_note(f"{cell.id}: no speedup, its baseline has another fingerprint identity")
        return MISSING + MISMATCH_MARK
    return mark(fmt_fixed(value, 2, suffix=r"$\times$"), result, baseline)


def delta_ppl(result: StoredResult | None, baseline: StoredResult | None) -> float | None:
    """ΔPPL % relative to the baseline."""
    if ppl(result) is None or ppl(baseline) is None:
        return None
    return 100.0 * (ppl(result) - ppl(baseline)) / ppl(baseline)


def quality_speed_cells(
    view: ResultView, cell: Cell, result: StoredResult | None, baseline: StoredResult | None
) -> list[str]:
    """TPOT, speedup, PPL and ΔPPL % of one cell, each marked when it came from a stale result."""
    return [
        mark(fmt_summary_sig(tpot(result), 3), result),
        fmt_speedup(view, cell, result, baseline),
        mark(fmt_fixed(ppl(result), 2), result),
        mark(fmt_fixed(delta_ppl(result, baseline), 2, sign=True), result, baseline),
    ]


def peak_gib(result: StoredResult | None) -> str:
    peak = None if result is None else result.metrics.peak_mem.allocated_bytes.mean
    return mark(fmt_sig(None if peak is None else peak / GIB, 3), result)  # exact CPU peaks of tiny models are MiB


def memory_source_note(results: list[StoredResult | None]) -> str:
    """Say how peak memory was measured (the measurement layer's source label), weights included."""
    sources = sorted({r.metrics.peak_mem.source or "" for r in results if r is not None})
    return f"Peak memory: {escape('; '.join(sources) or 'not measured')}, weights included."


def _baseline(view: ResultView, dataset: str) -> StoredResult | None:
    cell = view.baseline_cell(dataset)
    return view.get(cell) if cell else None


def main_table(view: ResultView) -> Table:
    """Baseline recompute, Start+Recent and Lazy on each dataset: TPOT, speedup, PPL, ΔPPL, peak memory."""
    blocks, seen = [], []
    by_dataset: dict[str, list[Cell]] = {}
    for cell in view.group("main"):
        by_dataset.setdefault(cell.labels["dataset"], []).append(cell)
    for dataset, cells in by_dataset.items():
        baseline = _baseline(view, dataset)
        rows = []
        for cell in cells:
            result = view.get(cell)
            seen.append(result)
            name = DATASET_NAMES.get(dataset, dataset)
            rows.append(
                [
                    escape(name),
                    escape(cell.labels["row"]),
                    *quality_speed_cells(view, cell, result, baseline),
                    peak_gib(result),
                ]
            )
        blocks.append(rows)
    return Table(
        name="main_table",
        caption="Streaming perplexity and decode speed under a fixed KV budget. "
        + SPEEDUP_DEF
        + r" $\Delta$PPL relative to the baseline. "
        + memory_source_note(seen),
        label="tab:main",
        header=["Dataset", "Method", "TPOT (ms)", "Speedup", "PPL", r"$\Delta$PPL (\%)", "Peak mem (GiB)"],
        align="llrrrrr",
        blocks=blocks,
    )


def _knob(cell: Cell, name: str) -> str:
    """A knob as configured; R, σ and δ only exist for Lazy Pruning (``--`` otherwise)."""
    if name in LAZY_KNOBS and cell.config.get("method") != "lazy":
        return "--"
    return str(cell.config.get(name, 0))


def _window(result: StoredResult | None) -> str:
    return MISSING if result is None else str(result.metrics.budget.window)


def _cache_stat(result: StoredResult | None, name: str) -> str:
    value = None if result is None else getattr(result.metrics.cache, name)
    return MISSING if value is None else mark(str(value), result)


def ablations_table(view: ResultView) -> Table:
    """Lazy vs strict at equal S, the σ and δ knobs on and off, and the sink count (PG19)."""
    baseline = _baseline(view, "pg19")
    rows = []
    for cell in view.group("ablations"):
        result = view.get(cell)
        rows.append(
            [
                escape(cell.labels["row"]),
                _knob(cell, "n_sink"),
                _window(result),
                _knob(cell, "compress_every"),
                _knob(cell, "cache_slack"),
                _knob(cell, "max_drop"),
                *quality_speed_cells(view, cell, result, baseline),
                _cache_stat(result, "max_attention_len"),
            ]
        )
    return Table(
        name="ablations",
        caption="Ablations on PG19 under one total budget "
        "(auto-cap: $W = C_{\\text{total}} - S - \\sigma$). "
        + SPEEDUP_DEF
        + " Max attn: the longest attention span measured.",
        label="tab:ablations",
        header=[
            "Setting",
            "$S$",
            "$W$",
            "$R$",
            r"$\sigma$",
            r"$\delta$",
            "TPOT (ms)",
            "Speedup",
            "PPL",
            r"$\Delta$PPL (\%)",
            "Max attn",
        ],
        align="lrrrrrrrrrr",
        blocks=[rows],
    )


SWEEPS = {
    "sweep_R": ("compress_every", "$R$", "prune interval $R$ (\\texttt{compress\\_every})"),
    "sweep_sigma": ("cache_slack", r"$\sigma$", "cache slack $\\sigma$ (\\texttt{cache\\_slack})"),
    "sweep_delta": ("max_drop", r"$\delta$", "max drop $\\delta$ (\\texttt{max\\_drop})"),
}


def sweep_table(view: ResultView, group: str) -> Table:
    """One knob of Lazy Pruning swept on PG19, the others at their main-table values."""
    knob, symbol, description = SWEEPS[group]
    baseline = _baseline(view, "pg19")
    rows = []
    for cell in view.group(group):
        result = view.get(cell)
        rows.append(
            [
                str(cell.config[knob]),
                _window(result),
                *quality_speed_cells(view, cell, result, baseline),
                _cache_stat(result, "prune_events"),
                _cache_stat(result, "max_attention_len"),
            ]
        )
    return Table(
        name=group,
        caption=f"Lazy Pruning on PG19: sweep of the {description}. " + SPEEDUP_DEF,
        label=f"tab:{group.replace('_', '-')}",
        header=[symbol, "$W$", "TPOT (ms)", "Speedup", "PPL", r"$\Delta$PPL (\%)", "Prunes", "Max attn"],
        align="rrrrrrrr",
        blocks=[rows],
    )


def _cache_metric(result: StoredResult | None, name: str):
    return None if result is None else getattr(result.metrics.cache, name)


def _share(result: StoredResult | None) -> str:
    maintenance, forward = _cache_metric(result, "maintenance_ms"), _cache_metric(result, "forward_ms")
    if not (maintenance and forward) or maintenance.mean + forward.mean <= 0:
        return MISSING
    return mark(fmt_fixed(100 * maintenance.mean / (maintenance.mean + forward.mean), 1), result)


def _bytes_per_step_kib(result: StoredResult | None) -> str:
    value = _cache_metric(result, "bytes_moved_per_step")
    return mark(fmt_fixed(None if value is None else value / 1024, 1), result)


def profiling_table(view: ResultView) -> Table:
    """Time in cache maintenance vs model forwards over the whole decode loop, per method and cache."""
    rows = []
    for cell in view.group("profiling"):
        result = view.get(cell)
        rows.append(
            [
                escape(cell.labels["row"]),
                mark(fmt_summary(_cache_metric(result, "maintenance_ms"), 1), result),
                mark(fmt_summary(_cache_metric(result, "forward_ms"), 1), result),
                _share(result),
                _cache_stat(result, "prune_events"),
                _bytes_per_step_kib(result),
                mark(fmt_fixed(ppl(result), 2), result),
            ]
        )
    return Table(
        name="profiling",
        caption="Prune overhead on PG19: synchronized wall time of cache maintenance and of model forwards, "
        "summed over the decode loop (profiling runs sync around every cache operation, so their TPOT is not "
        "the main table's). Moved: bytes copied by cache maintenance per decode step. PPL checks that "
        "the fast and the plain cache implement the same definition.",
        label="tab:profiling",
        header=[
            "Method, cache",
            "Maintenance (ms)",
            "Forward (ms)",
            r"Share (\%)",
            "Prunes",
            "Moved (KiB/step)",
            "PPL",
        ],
        align="lrrrrrr",
        blocks=[rows],
    )


def streaming_tables(view: ResultView) -> list[Table]:
    """Every streaming table; one whose group the plan lacks (RUN_SWEEPS=0, ...) renders as a short note."""
    return [
        main_table(view),
        ablations_table(view),
        *(sweep_table(view, g) for g in SWEEPS),
        profiling_table(view),
    ]
