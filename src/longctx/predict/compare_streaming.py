"""The streaming study's published runs against the reference protocol predicted on meta (``--compare-original``).

Every measurement of ``longctx.original.streaming`` (Pythia-2.8B fp16, one A800 80GB) is predicted as a
``reference`` cell with its own knobs and stream length (N = the run's ``total_tokens``; its text is not
needed: only lengths matter). Peaks compared are the original's ``max_memory_allocated`` (MiB in its files)
with the predicted peak of live bytes; TPOT is set beside the roofline lower bound of a decode step on the
A800 (``tpot_lower_bound_ms``: FLOPs at peak fp16 rate or weights + K/V read at full bandwidth, whichever is
slower), so ``bound_share`` says how close to the hardware limit the original ran.
"""

from __future__ import annotations

import statistics

from longctx.predict.cells import Prediction
from longctx.study import Cell

MIB = 2**20
GB = 1e9
STREAMING_MODEL = "EleutherAI/pythia-2.8b"


def published_cell(record) -> Cell:
    """The reference-protocol cell of one published run (its method, budget knobs and N)."""
    knobs = record.knobs
    config = {
        "model": STREAMING_MODEL,
        "dtype": "float16",
        "protocol": "reference",
        "method": record.method,
        "n_sink": knobs.n_sink,
        "cap_total": knobs.cap_total,
        "text_file": f"original {record.dataset} sample (not needed: N = the run's total_tokens)",
        "max_eval_tokens": record.total_tokens,
    }
    if record.method == "lazy":
        config.update(compress_every=knobs.compress_every, cache_slack=knobs.cache_slack, max_drop=knobs.max_drop)
    return Cell(f"streaming/original/{record.id}", "streaming", record.table, {"id": record.id}, config)


def published_row(record, prediction: Prediction) -> dict:
    measured_gb = record.metrics.peak_memory_mb * MIB / GB
    bound = prediction.details.get("tpot_lower_bound_ms")
    return {
        "id": record.id,
        "table": record.table,
        "method": record.method,
        "measured_peak_gb": measured_gb,
        "predicted_peak_gb": None if prediction.peak_bytes is None else prediction.peak_bytes / GB,
        "predicted_status": prediction.status,
        "measured_tpot_ms": record.metrics.tpot_ms,
        "tpot_lower_bound_ms": bound,
        "bound_share": None if not bound else bound / record.metrics.tpot_ms,
    }


def streaming_summary(rows: list[dict]) -> dict:
    errors = [
        abs(row["predicted_peak_gb"] - row["measured_peak_gb"]) / row["measured_peak_gb"]
        for row in rows
        if row["predicted_peak_gb"] is not None
    ]
    return {
        "gpu": "A800-80GB",
        "cells": rows,
        "median_peak_rel_error": statistics.median(errors) if errors else None,
        "max_peak_rel_error": max(errors) if errors else None,
    }


def describe_streaming(summary: dict) -> str:
    lines = [
        "original streaming runs (cs3602 254e749, Pythia-2.8B fp16, one A800) vs this prediction (reference "
        "protocol); peak = max_memory_allocated; TPOT beside the decode step's roofline lower bound",
        f"{'run':28s} {'method':13s} {'meas. GB':>9s} {'pred. GB':>9s} {'rel.err':>8s} {'TPOT ms':>8s} "
        f"{'bound ms':>9s} {'share':>6s}",
    ]
    for row in summary["cells"]:
        measured, predicted = row["measured_peak_gb"], row["predicted_peak_gb"]
        error = "-" if predicted is None else f"{abs(predicted - measured) / measured:8.1%}"
        bound, share = row["tpot_lower_bound_ms"], row["bound_share"]
        lines.append(
            f"{row['id']:28s} {row['method']:13s} {measured:9.2f} {predicted or 0:9.2f} {error:>8s} "
            f"{row['measured_tpot_ms']:8.2f} {bound or 0:9.2f} {share or 0:6.1%}"
        )
    lines.append(f"median relative peak error: {summary['median_peak_rel_error']:.1%} (max "
                 f"{summary['max_peak_rel_error']:.1%}) over {len(summary['cells'])} runs")  # fmt: skip
    return "\n".join(lines)
