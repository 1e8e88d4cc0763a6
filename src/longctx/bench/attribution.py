"""Attribution benchmark: FlashTrace and IFR time and peak memory as the output grows (prompt fixed).

Each point is an isolated time-curve cell (a fresh worker process), so an OOM at 32k tokens cannot spoil
the next point. Goals (issue 7, one H100): FlashTrace at 5,000 output tokens in <= 5 s; 10,000 and
32,000 tokens complete without OOM. The CPU shapes exist so the harness itself is exercised anywhere.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from longctx.attribution.cell import AttributionTimeConfig, cell_metrics, measure_cell, overall_status

TIMING = {
    "model": "random:qwen3-8b",
    "tokenizer": "assets/tiny/tiny-qwen3",
    "dtype": "bfloat16",
    "device": "cuda",
    "prompt_len": 10,
    "grid": {
        "ifr_multi_hop_both": [10, 100, 1000, 5000, 10000, 32000],
        "ifr_multi_hop": [10, 1000, 5000],
        "ifr_all_positions": [10, 100, 1000, 5000],
    },
    "repeats": 3,
    "warmup": 1,
}
CPU = {
    "model": "random:tiny-qwen3",
    "tokenizer": "assets/tiny/tiny-qwen3",
    "dtype": "float32",
    "device": "cpu",
    "prompt_len": 10,
    "grid": {"ifr_multi_hop_both": [64, 256, 1024], "ifr_all_positions": [64, 256]},
    "repeats": 2,
    "warmup": 1,
}
HEADLINE_LEN = 5000


def _ensure_tokenizer(path: str) -> None:
    from longctx.tiny import ensure_tiny_models

    ensure_tiny_models(Path(path).parent)


def run_attribution_bench(shapes: str, log_dir: str | Path) -> tuple[dict, dict]:
    """Measure the grid of ``shapes`` ('timing' or 'cpu'); return (config, metrics)."""
    spec = TIMING if shapes == "timing" else CPU
    _ensure_tokenizer(spec["tokenizer"])
    curves: dict[str, list[dict]] = {}
    for method, lengths in spec["grid"].items():
        for output_len in lengths:
            cfg = AttributionTimeConfig(
                method=method,
                prompt_len=spec["prompt_len"],
                output_len=output_len,
                model=spec["model"],
                tokenizer=spec["tokenizer"],
                dtype=spec["dtype"],
                device=spec["device"],
                warmup=spec["warmup"],
                repeats=spec["repeats"],
            )
            rows = measure_cell(cfg, list(range(cfg.repeats)), Path(log_dir) / f"{method}-G{output_len}.log")
            metrics = cell_metrics(rows)
            curves.setdefault(method, []).append(
                {
                    "output_len": output_len,
                    "status": overall_status(rows),
                    "time_sec": metrics["time_sec"],
                    "peak_mem_allocated_bytes": metrics["peak_mem_allocated_bytes"],
                    "peak_mem_reserved_bytes": metrics["peak_mem_reserved_bytes"],
                    "peak_mem_source": metrics["peak_mem_source"],
                    "lengths": metrics["lengths"],
                }
            )
    metrics = {
        "curves": curves,
        "flashtrace_5000_sec": _mean_at(curves.get("ifr_multi_hop_both", []), HEADLINE_LEN),
        "flashtrace_vs_ifr_speedup": _speedup(curves),
    }
    config = {
        **{k: v for k, v in spec.items() if k != "grid"},
        "grid": spec["grid"],
        "shapes": shapes,
        "cell_defaults": _defaults(),
    }
    return config, metrics


def _defaults() -> dict:
    """The knobs every cell leaves at its default (chunk sizes, IG steps, ...), recorded with the bench."""
    fields = dataclasses.fields(AttributionTimeConfig)
    return {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}


def _mean_at(points: list[dict], output_len: int) -> float | None:
    for point in points:
        if point["output_len"] == output_len and point["status"] == "ok":
            return point["time_sec"]["mean"]
    return None


def _speedup(curves: dict) -> dict | None:
    """IFR / FlashTrace time at the longest output length both completed."""
    ifr = {p["output_len"]: p for p in curves.get("ifr_all_positions", []) if p["status"] == "ok"}
    ft = {p["output_len"]: p for p in curves.get("ifr_multi_hop_both", []) if p["status"] == "ok"}
    common = sorted(set(ifr) & set(ft))
    if not common:
        return None
    length = common[-1]
    return {"output_len": length, "ratio": ifr[length]["time_sec"]["mean"] / ft[length]["time_sec"]["mean"]}
