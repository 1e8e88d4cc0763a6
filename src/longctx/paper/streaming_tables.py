"""The streaming study's tables: main (PG19, WikiText), ablations, R/σ/δ sweeps and prune-overhead profiling.

Rows are grouped by protocol (``efficient``: the definition; ``reference``: the original's code path). Speedup
= baseline TPOT / method TPOT, both from the same dataset and protocol; it is computed only when the baseline
and the method share a fingerprint identity (otherwise it prints as missing with a note), and it carries the
stale mark when either side is a stale result reused under ALLOW_STALE=1. The main table's "Orig." columns are
the published numbers of the claims about that row (``longctx.claims``). A Lazy row whose measured prune
schedule is the main Lazy row's (e.g. δ at σ = 0) is marked: its numbers repeat that row's.
"""

from __future__ import annotations

from longctx.paper.latex import MISSING, escape, fmt_fixed, fmt_sig, fmt_summary, fmt_summary_sig, mark
from longctx.paper.render import MISMATCH_MARK, Table
from longctx.paper.store import ResultView
from longctx.results import StoredResult
from longctx.stats import Summary
from longctx.study import Cell

GIB = 2**30
SPEEDUP_DEF = r"Speedup $=$ baseline TPOT $/$ method TPOT (same dataset, protocol and fingerprint)."
SAME_SCHEDULE_MARK = r"\textsuperscript{$\equiv$}"
SAME_SCHEDULE_NOTE = (
    SAME_SCHEDULE_MARK + r" measured prune schedule identical to the main Lazy row's (same protocol): the row repeats "
    r"that row (timing noise aside). This is $\delta$ at $\sigma = 0$, where a prune cuts to $C_{\text{soft}} = "
    r"C_{\text{total}}$ whatever $\delta$ is (so in the original too)."
)

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


def protocol_of(cell: Cell) -> str:
    return cell.config.get("protocol", "efficient")


def _baseline(view: ResultView, dataset: str, protocol: str = "efficient") -> StoredResult | None:
    cell = view.baseline_cell(dataset, protocol=protocol)
    return view.get(cell) if cell else None


def by_protocol(cells: list[Cell]) -> list[tuple[str, list[Cell]]]:
    """Cells split by protocol, efficient first, each in plan order."""
    groups: dict[str, list[Cell]] = {}
    for cell in sorted(cells, key=lambda c: protocol_of(c) != "efficient"):
        groups.setdefault(protocol_of(cell), []).append(cell)
    return list(groups.items())


def published_columns(view: ResultView) -> dict[str, dict[str, float]]:
    """cell id -> {metric: the original's value} from the one-cell ``ppl`` and ``tpot_ms`` claims."""
    from longctx.claims import CLAIMS
    from longctx.claims_check import matching_cells, original_value

    out: dict[str, dict[str, float]] = {}
    for claim in CLAIMS:
        if claim.metric in ("ppl", "tpot_ms") and len(claim.cells) == 1 and claim.original:
            for cell in matching_cells(view.plan, claim.cells[0]):
                out.setdefault(cell.id, {})[claim.metric] = original_value(claim)
    return out


def main_table(view: ResultView) -> Table:
    """Baseline recompute, Start+Recent and Lazy per dataset and protocol: TPOT, speedup, PPL, ΔPPL, peak memory,
    and the published TPOT and PPL where a claim compares the row with them."""
    blocks, seen = [], []
    original = published_columns(view)
    by_dataset: dict[str, list[Cell]] = {}
    for cell in view.group("main"):
        by_dataset.setdefault(cell.labels["dataset"], []).append(cell)
    for dataset, cells in by_dataset.items():
        for protocol, protocol_cells in by_protocol(cells):
            baseline = _baseline(view, dataset, protocol)
            rows = []
            for cell in protocol_cells:
                result = view.get(cell)
                seen.append(result)
                published = original.get(cell.id, {})
                rows.append(
                    [
                        escape(DATASET_NAMES.get(dataset, dataset)),
                        protocol,
                        escape(cell.labels["row"]),
                        *quality_speed_cells(view, cell, result, baseline),
                        peak_gib(result),
                        fmt_fixed(published.get("tpot_ms"), 2) if "tpot_ms" in published else "--",
                        fmt_fixed(published.get("ppl"), 3) if "ppl" in published else "--",
                    ]
                )
            blocks.append(rows)
    return Table(
        name="main_table",
        caption="Streaming perplexity and decode speed under a fixed KV budget, under the efficient protocol (the "
        "definition) and the reference protocol (the original's code path). "
        + SPEEDUP_DEF
        + r" $\Delta$PPL relative to the baseline. "
        + memory_source_note(seen)
        + " Orig.: the published single-run numbers (Pythia-2.8B fp16, one A800) a claim compares the row with.",
        label="tab:main",
        header=["Dataset", "Protocol", "Method", "TPOT (ms)", "Speedup", "PPL", r"$\Delta$PPL (\%)",
                "Peak mem (GiB)", "Orig. TPOT", "Orig. PPL"],  # fmt: skip
        align="lllrrrrrrr",
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


def _lazy_schedule(view: ResultView, protocol: str) -> tuple[str | None, str | None]:
    """The main Lazy row of PG19 under ``protocol``: its cell id and measured prune-schedule hash."""
    for cell in view.group("main"):
        if cell.labels["dataset"] == "pg19" and cell.config["method"] == "lazy" and protocol_of(cell) == protocol:
            result = view.get(cell)
            return cell.id, result.metrics.cache.prune_schedule_sha256 if result else None
    return None, None


def _row_label(view: ResultView, cell: Cell, result: StoredResult | None, text: str, marks: list) -> str:
    """The row's label, marked when its measured prune schedule is the main Lazy row's (another cell)."""
    lazy_id, lazy_schedule = _lazy_schedule(view, protocol_of(cell))
    schedule = result.metrics.cache.prune_schedule_sha256 if result else None
    if cell.config["method"] == "lazy" and cell.id != lazy_id and schedule and schedule == lazy_schedule:
        marks.append(cell.id)
        return text + SAME_SCHEDULE_MARK
    return text


def _pg19_blocks(view: ResultView, group: str, row) -> list[list[list[str]]]:
    """One block of rows per protocol, each row led by its protocol (first row only) and measured against that
    protocol's PG19 recompute baseline; ``row(cell, result, baseline)`` gives the other columns."""
    blocks = []
    for protocol, cells in by_protocol(view.group(group)):
        baseline = _baseline(view, "pg19", protocol)
        rows = [row(cell, view.get(cell), baseline) for cell in cells]
        blocks.append([[protocol if i == 0 else "", *cols] for i, cols in enumerate(rows)])
    return blocks


def ablations_table(view: ResultView) -> Table:
    """Lazy vs strict at equal S, the σ and δ knobs on and off, and the sink count (PG19), per protocol."""
    marks: list[str] = []

    def row(cell: Cell, result: StoredResult | None, baseline) -> list[str]:
        return [
            _row_label(view, cell, result, escape(cell.labels["row"]), marks),
            _knob(cell, "n_sink"),
            _window(result),
            _knob(cell, "compress_every"),
            _knob(cell, "cache_slack"),
            _knob(cell, "max_drop"),
            *quality_speed_cells(view, cell, result, baseline),
            _cache_stat(result, "max_attention_len"),
        ]

    blocks = _pg19_blocks(view, "ablations", row)
    return Table(
        name="ablations",
        caption="Ablations on PG19 under one total budget "
        "(auto-cap: $W = C_{\\text{total}} - S - \\sigma$). "
        + SPEEDUP_DEF
        + " Max attn: the longest attention span measured.",
        label="tab:ablations",
        header=[
            "Protocol",
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
        align="llrrrrrrrrrr",
        blocks=blocks,
        notes=[SAME_SCHEDULE_NOTE] if marks else [],
    )


SWEEPS = {
    "sweep_R": ("compress_every", "$R$", "prune interval $R$ (\\texttt{compress\\_every})"),
    "sweep_sigma": ("cache_slack", r"$\sigma$", "cache slack $\\sigma$ (\\texttt{cache\\_slack})"),
    "sweep_delta": ("max_drop", r"$\delta$", "max drop $\\delta$ (\\texttt{max\\_drop}) at $\\sigma = 0$"),
    "sweep_delta_slack": ("max_drop", r"$\delta$", "max drop $\\delta$ at the ablations' slack $\\sigma$"),
}


def sweep_table(view: ResultView, group: str) -> Table:
    """One knob of Lazy Pruning swept on PG19, the others at their main-table values, per protocol."""
    knob, symbol, description = SWEEPS[group]
    marks: list[str] = []

    def row(cell: Cell, result: StoredResult | None, baseline) -> list[str]:
        return [
            _row_label(view, cell, result, str(cell.config[knob]), marks),
            str(cell.config["cache_slack"]),
            _window(result),
            *quality_speed_cells(view, cell, result, baseline),
            _cache_stat(result, "prune_events"),
            _cache_stat(result, "max_attention_len"),
        ]

    blocks = _pg19_blocks(view, group, row)
    return Table(
        name=group,
        caption=f"Lazy Pruning on PG19: sweep of the {description}. " + SPEEDUP_DEF,
        label=f"tab:{group.replace('_', '-')}",
        header=["Protocol", symbol, r"$\sigma$", "$W$", "TPOT (ms)", "Speedup", "PPL", r"$\Delta$PPL (\%)", "Prunes",
                "Max attn"],  # fmt: skip
        align="lrrrrrrrrr",
        blocks=blocks,
        notes=[SAME_SCHEDULE_NOTE] if marks else [],
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
