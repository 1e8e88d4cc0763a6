"""``longctx predict --compare-original``: the reference protocol predicted against the original's measurements.

(The streaming study's published runs are compared too: ``compare_streaming``, the summary's ``streaming``.)

Every cell of the original time curve (``longctx.original.attribution``: Qwen3-8B, fp16, eager attention,
a balanced device map) whose run really ended ok or out of memory is predicted with the reference protocol
on the GPUs that run had, in the state that run found its process in. The original ran every method of a
grid in one process, in a fixed order (its run files), so a run could find:

* parameter gradients left by an earlier IG, attention x IG or AttnLRP run (the parameters were never
  frozen and the last backward's ``.grad`` stays allocated): 15.2 GB of fp16 gradients, every parameter but
  the input embedding;
* for the perturbation methods, the masked LM (Longformer-base-4096, fp32) that their runner builds on the
  main GPU inside the measured window, whether it uses it or not;
* trainable parameters in every method: forwards outside ``no_grad`` keep their autograd graph.

Peaks compared are allocated bytes (the sum over GPUs of ``max_memory_allocated``, over the ok runs; for
an out-of-memory cell, the failed run's), not the summary's published figure, which is the sum of
``max_memory_reserved`` (allocator cache included). GB = 1e9 bytes. Device count per run directory: out-0
had eight GPUs, every other directory six (its per-device peaks), all taken as A800 80GB.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from longctx.original.attribution import OriginalTimeCell, preferred_cells
from longctx.predict.cells import OriginalProcess, Prediction
from longctx.predict.gpus import gpu_spec

GB = 1e9
ORIGINAL_GPU = "A800-80GB"
COMPARE_OUTPUT = "results/predict/compare_original.json"
METHOD_ORDER = (
    "IG", "perturbation_all", "attention_I_G", "perturbation_REAGENT", "ifr_all_positions", "perturbation_CLP",
    "ifr_multi_hop", "ifr_multi_hop_both", "attnlrp",
)  # fmt: skip
LEAVES_GRADIENTS = {"IG", "attention_I_G", "attnlrp"}
BUILDS_MASKED_LM = {"perturbation_all", "perturbation_CLP", "perturbation_REAGENT"}


@dataclass(frozen=True)
class RunDirectory:
    """One process of the original experiment: its GPUs, its (P, G) grid and its methods, in run order."""

    n_gpus: int
    grid: tuple[tuple[int, int], ...]
    methods: tuple[str, ...] = METHOD_ORDER


# From the original's exp/exp1/out*/time_curve_runs.jsonl (row order = run order; per-device peaks = GPUs).
RUN_DIRECTORIES = {
    "out-0": RunDirectory(8, ((10, 10), (10, 100))),
    "out-1": RunDirectory(6, tuple((p, 10) for p in (10, 100, 500, 1000, 2000, 5000, 10000))),
    "out-2": RunDirectory(6, ((10, 500), (10, 1000), (10, 2000), (10, 5000), (10, 1000))),
    "out-3": RunDirectory(6, ((10, 1000), (10, 2000), (10, 5000))),
    "out-4": RunDirectory(6, ((10, 2000),), tuple(m for m in METHOD_ORDER if m not in ("IG", "attention_I_G"))),
    "out-5": RunDirectory(6, ((10, 5000), (10, 10000)), ("ifr_all_positions", "ifr_multi_hop",
                                                          "ifr_multi_hop_both", "attnlrp")),
    "out": RunDirectory(6, ((10, 10000),), ("ifr_multi_hop", "ifr_multi_hop_both")),
}  # fmt: skip


def run_directory(cell: OriginalTimeCell) -> str:
    """``out-3`` from the row's source ``flashtrace@02ef4d3:exp/exp1/out-3/time_curve_summary.csv``."""
    return cell.source.split("/")[-2]


def process_state(cell: OriginalTimeCell, mlm_bytes: int) -> OriginalProcess:
    """What the cell's first run found in its process (see the module docstring)."""
    directory = RUN_DIRECTORIES[run_directory(cell)]
    earlier = []
    for lengths in directory.grid:
        for method in directory.methods:
            if lengths == (cell.target_input_tokens, cell.target_output_tokens) and method == cell.method:
                return OriginalProcess(
                    stale_grads=bool(LEAVES_GRADIENTS & set(earlier)),
                    mlm_bytes=mlm_bytes if cell.method in BUILDS_MASKED_LM else 0,
                    trainable=True,
                )
            earlier.append(method)
    raise ValueError(f"{cell.key} is not in the grid of {run_directory(cell)}")


def compared_cells() -> list[OriginalTimeCell]:
    """The original's cells that really ran to ok or out of memory (not only failed after a fatal error)."""
    return [c for c in preferred_cells().values() if c.outcome in ("ok", "oom") and not c.only_after_fatal]


def reference_cell(cell: OriginalTimeCell, plan_settings: dict):
    """The reference-protocol plan cell of an original measurement (its P, G and the plan's settings)."""
    from longctx.attribution.study import time_cell

    settings = {key: value for key, value in plan_settings.items() if key != "method_options"}
    settings.update(protocol="reference", dtype="float16", attn_implementation="eager")
    group = "time_curve_output" if cell.target_output_tokens != 10 else "time_curve_prompt"
    return time_cell(settings, group, cell.method, cell.target_input_tokens, cell.target_output_tokens,
                     plan_settings.get("method_options", {}))  # fmt: skip


def measured_peak_gb(cell: OriginalTimeCell) -> float | None:
    return cell.ok_peak_alloc_mean_gb if cell.outcome == "ok" else cell.peak_alloc_mean_gb


def compare_row(cell: OriginalTimeCell, prediction: Prediction) -> dict:
    """One row of the comparison, with exactly the keys of the issue's JSON."""
    return {
        "method": cell.method,
        "prompt_len": cell.target_input_tokens,
        "output_len": cell.target_output_tokens,
        "measured_status": cell.outcome,
        "predicted_status": prediction.status,
        "measured_peak_gb": measured_peak_gb(cell),
        "predicted_peak_gb": None if prediction.peak_bytes is None else prediction.peak_bytes / GB,
        "measured_time_s": cell.time_mean_s,
        "roofline_s": prediction.roofline_s,
    }


def summary(rows: list[dict]) -> dict:
    """The issue's object: rows, status agreement (share of cells) and median relative peak error (ok cells)."""
    agree = [row["measured_status"] == row["predicted_status"] for row in rows]
    errors = [
        abs(row["predicted_peak_gb"] - row["measured_peak_gb"]) / row["measured_peak_gb"]
        for row in rows
        if row["measured_status"] == "ok" and row["predicted_peak_gb"] is not None and row["measured_peak_gb"]
    ]
    return {
        "cells": rows,
        "status_agreement": sum(agree) / len(agree) if agree else None,
        "median_peak_rel_error": statistics.median(errors) if errors else None,
    }


def compare_original(plan_settings: dict, jobs: int = 1, progress=None) -> tuple[dict, list[Prediction]]:
    """Predict every compared cell (in ``jobs`` processes); (the issue's object, the predictions)."""
    from longctx.original.streaming import load_streaming_results
    from longctx.predict.compare_streaming import published_cell, published_row, streaming_summary
    from longctx.predict.plan import predict_plan
    from longctx.predict.stand_ins import meta_masked_lm

    originals = compared_cells()
    mlm = meta_masked_lm(plan_settings.get("method_options", {}).get("mlm_model", "allenai/longformer-base-4096"))
    mlm_bytes = sum(p.numel() * p.element_size() for p in mlm.parameters())
    options = [
        {
            "n_gpus": RUN_DIRECTORIES[run_directory(cell)].n_gpus,
            "device_map_rule": "accelerate",
            "original": process_state(cell, mlm_bytes),
        }
        for cell in originals
    ]
    published = load_streaming_results()
    cells = [reference_cell(cell, plan_settings) for cell in originals] + [published_cell(r) for r in published]
    options += [{}] * len(published)
    predictions = predict_plan(cells, gpu_spec(ORIGINAL_GPU), cell_options=options, jobs=jobs, progress=progress)
    attribution, streaming = predictions[: len(originals)], predictions[len(originals) :]
    rows = [compare_row(cell, prediction) for cell, prediction in zip(originals, attribution, strict=True)]
    streaming_rows = [published_row(r, prediction) for r, prediction in zip(published, streaming, strict=True)]
    return {**summary(rows), "streaming": streaming_summary(streaming_rows)}, predictions


def describe(summary: dict) -> str:
    """The comparison as a table: one line per cell, then the agreement figures."""
    lines = [
        "original (FlashTrace 02ef4d3, Qwen3-8B fp16 eager, 6 or 8 GPUs) vs this prediction (reference protocol, "
        "A800 80GB); peak = sum over GPUs of max_memory_ALLOCATED (the published figure is max_memory_reserved)",
        f"{'method':22s} {'P':>6s} {'G':>6s} {'measured':>9s} {'predicted':>9s} {'meas. GB':>9s} {'pred. GB':>9s} "
        f"{'rel.err':>8s} {'meas. s':>9s} {'roofline s':>10s}",
    ]
    for row in summary["cells"]:
        measured, predicted = row["measured_peak_gb"], row["predicted_peak_gb"]
        error = abs(predicted - measured) / measured if measured and predicted is not None else None
        lines.append(
            f"{row['method']:22s} {row['prompt_len']:6d} {row['output_len']:6d} {row['measured_status']:>9s} "
            f"{row['predicted_status']:>9s} {_num(measured, '9.1f')} {_num(predicted, '9.1f')} {_num(error, '8.1%')} "
            f"{_num(row['measured_time_s'], '9.1f')} {_num(row['roofline_s'], '10.3g')}"
        )
    agreement, error = summary["status_agreement"], summary["median_peak_rel_error"]
    lines.append(f"status agreement (ok/oom): {_num(agreement, '.1%').strip()} of {len(summary['cells'])} cells; "
                 f"median relative peak error over ok cells: {_num(error, '.1%').strip()}")  # fmt: skip
    if "streaming" in summary:
        from longctx.predict.compare_streaming import describe_streaming

        lines += ["", describe_streaming(summary["streaming"])]
    return "\n".join(lines)


def _num(value, spec: str) -> str:
    width = int("".join(ch for ch in spec.split(".")[0] if ch.isdigit()) or 0)
    return f"{value:{spec}}" if value is not None else "-".rjust(width)
