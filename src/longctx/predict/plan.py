"""A whole plan predicted: cells in an order that lets measured model calls serve later cells, one JSON, a table.

Cells of one model placement share their measured calls (``cells.CALL_FAMILIES``), and a call is measured
only beyond the lengths measured so far, so each method's cells run longest first; the output keeps the
plan's order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from longctx.predict.cells import SOURCE, Prediction, predict_cell
from longctx.predict.gpus import GpuSpec
from longctx.study import Cell

GB = 1e9
RESULTS_DIR = Path("results/predict")


def _size(cell: Cell) -> int:
    config = cell.config
    if cell.study == "attribution":
        return int(config["prompt_len"]) + int(config["output_len"])
    return int(config.get("max_eval_tokens", 0))


def _group(cell: Cell) -> tuple:
    config = cell.config
    return (cell.study, config.get("model"), config.get("protocol", "efficient"), config.get("method"))


def predict_plan(
    cells: list[Cell],
    gpu: GpuSpec,
    *,
    n_gpus: int | None = None,
    device_map_rule: str = "transformers",
    progress: Callable[[Prediction], None] | None = None,
) -> list[Prediction]:
    """Predictions for ``cells`` (plan order), computed longest first within each method."""
    order = sorted(range(len(cells)), key=lambda i: (_group(cells[i]), -_size(cells[i])))
    done: dict[int, Prediction] = {}
    for index in order:
        done[index] = predict_cell(cells[index], gpu, n_gpus=n_gpus, device_map_rule=device_map_rule)
        if progress:
            progress(done[index])
    return [done[i] for i in range(len(cells))]


def plan_record(profile: str, gpu: GpuSpec, n_gpus: int | None, predictions: list[Prediction], seconds: float) -> dict:
    """The JSON of one predicted plan."""
    return {
        "profile": profile,
        "gpu": gpu.as_dict(),
        "n_gpus": n_gpus,
        "source": SOURCE,
        "definitions": {
            "peak_bytes": "sum over GPUs of each GPU's peak of live tensor bytes (CUDA max_memory_allocated "
            "adds allocator rounding; max_memory_reserved also the cache)",
            "fits": "every GPU's peak <= usable_bytes (memory minus a CUDA context reserve)",
            "min_bytes": "weights once per forward pass and per backward pass (twice when trainable), plus the "
            "K/V cache read by every decode step",
            "roofline_s": "max(flops / fp16_flops, min_bytes / hbm_bytes_per_s) on one GPU; streaming: summed per step",
        },
        "predicted_in_s": round(seconds, 1),
        "cells": [p.as_dict() for p in predictions],
    }


def default_output(profile: str, gpu: GpuSpec, n_gpus: int | None) -> Path:
    suffix = f"_x{n_gpus}" if n_gpus and n_gpus > 1 else ""
    return RESULTS_DIR / f"{profile}_{gpu.name}{suffix}.json"


def table_line(p: Prediction) -> str:
    peak = "-" if p.peak_bytes is None else f"{p.peak_bytes / GB:8.1f}"
    top = max(p.peak_bytes_by_device.values(), default=0) / GB
    roof = "-" if p.roofline_s is None else f"{p.roofline_s:10.3g}"
    return f"{p.cell_id:62s} {p.status:15s} {peak:>8s} {top:8.1f} {p.flops:10.3g} {roof:>10s}"


def table(predictions: list[Prediction]) -> str:
    head = f"{'cell':62s} {'status':15s} {'peak GB':>8s} {'max GPU':>8s} {'FLOPs':>10s} {'roofline s':>10s}"
    return "\n".join([head, *(table_line(p) for p in predictions)])


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start
