"""A whole plan predicted: cells in an order that lets measured model calls serve later cells, one JSON, a table.

Cells of one model placement share their measured calls (``cells.CALL_FAMILIES``), and a call is measured
only beyond the lengths measured so far, so each method's cells run longest first. With ``jobs`` > 1 the
groups (one method of one protocol, or a study's cells) are shared out among worker processes, heaviest
first (``GROUP_WEIGHTS``: relative costs measured on the full plan), each group in one worker so that its
cells still share their measurements; the output keeps the plan's order.
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


GROUP_WEIGHTS = {"perturbation_REAGENT": 6, "perturbation_all": 4, "perturbation_CLP": 4, "attention_I_G": 2,
                 "IG": 2, "attnlrp": 1}  # fmt: skip  # other groups: 0.5


def _weight(cells: list[Cell]) -> float:
    return GROUP_WEIGHTS.get(cells[0].config.get("method"), 0.5)


def shares(cells: list[Cell], jobs: int) -> list[list[int]]:
    """Cell indices per worker: whole groups, longest cell first in each, groups spread heaviest first."""
    groups: dict[tuple, list[int]] = {}
    for index in sorted(range(len(cells)), key=lambda i: (_group(cells[i]), -_size(cells[i]))):
        groups.setdefault(_group(cells[index]), []).append(index)
    loads = [0.0] * jobs
    out: list[list[int]] = [[] for _ in range(jobs)]
    for members in sorted(groups.values(), key=lambda m: -_weight([cells[i] for i in m])):
        worker = loads.index(min(loads))
        out[worker] += members
        loads[worker] += _weight([cells[i] for i in members])
    return [share for share in out if share]


def _predict_share(args) -> list[tuple[int, Prediction]]:
    cells, indices, gpu, options, queue = args
    out = []
    for index in indices:
        prediction = predict_cell(cells[index], gpu, **options[index])
        out.append((index, prediction))
        if queue is not None:
            queue.put(prediction.as_dict())
    return out


def predict_plan(
    cells: list[Cell],
    gpu: GpuSpec,
    *,
    n_gpus: int | None = None,
    device_map_rule: str = "transformers",
    cell_options: list[dict] | None = None,
    jobs: int = 1,
    progress: Callable[[dict], None] | None = None,
) -> list[Prediction]:
    """Predictions for ``cells`` (plan order), computed longest first within each method, in ``jobs`` processes.

    ``cell_options``: per cell, keyword arguments of ``predict_cell`` (instead of ``n_gpus``/``device_map_rule``).
    """
    options = cell_options or [{"n_gpus": n_gpus, "device_map_rule": device_map_rule}] * len(cells)
    plan = shares(cells, max(1, jobs))
    if len(plan) <= 1:
        done = _predict_share((cells, plan[0] if plan else [], gpu, options, None))
        for _, prediction in done:
            if progress:
                progress(prediction.as_dict())
    else:
        done = _in_workers(cells, plan, gpu, options, progress)
    by_index = dict(done)
    return [by_index[i] for i in range(len(cells))]


def _in_workers(cells, plan, gpu, options, progress) -> list[tuple[int, Prediction]]:
    """Each share in a forked worker; progress lines come back through a queue as cells finish."""
    import multiprocessing
    import threading

    context = multiprocessing.get_context("fork")
    with context.Manager() as manager:
        queue = manager.Queue()

        def relay():
            while (item := queue.get()) is not None:
                if progress:
                    progress(item)

        thread = threading.Thread(target=relay, daemon=True)
        thread.start()
        with context.Pool(len(plan)) as pool:
            parts = pool.map(_predict_share, [(cells, share, gpu, options, queue) for share in plan], chunksize=1)
        queue.put(None)
        thread.join()
    return [item for part in parts for item in part]


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
