"""Attribution benchmark: FlashTrace and IFR time and peak memory as the output grows (prompt fixed).

Each point is a time-curve cell run through the plan runner (a fresh worker process per cell), so an OOM
at 32k tokens cannot spoil the next point; "FlashTrace" is ``ifr_multi_hop``, as everywhere. Goals (issue
7, one H100): FlashTrace at 5,000 output tokens in <= 5 s; 10,000 and 32,000 tokens complete without OOM.
The CPU shapes exist so the harness itself is exercised anywhere.
"""

from __future__ import annotations

from pathlib import Path

from longctx.attribution.study import time_cell
from longctx.plan import Plan
from longctx.results import ReusePolicy, read_result

TIMING = {
    "model": "random:qwen3-8b",
    "tokenizer": "assets/tiny/tiny-qwen3",
    "dtype": "bfloat16",
    "device": "cuda",
    "prompt_len": 10,
    "grid": {
        "ifr_multi_hop": [10, 100, 1000, 5000, 10000, 32000],
        "ifr_multi_hop_both": [10, 1000, 5000],
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
    "grid": {"ifr_multi_hop": [64, 256, 1024], "ifr_all_positions": [64, 256]},
    "repeats": 2,
    "warmup": 1,
}
EST_SECONDS_PER_CELL = {"timing": 120, "cpu": 10}  # rough, for the runner's progress line and time limits
FLASHTRACE, IFR = "ifr_multi_hop", "ifr_all_positions"
HEADLINE_LEN = 5000


def _ensure_tokenizer(path: str) -> None:
    from longctx.tiny import ensure_tiny_models

    ensure_tiny_models(Path(path).parent)


def bench_plan(shapes: str) -> Plan:
    """The bench's cells: the time-curve cells of each method at each output length (defaults elsewhere)."""
    spec = TIMING if shapes == "timing" else CPU
    settings = {k: spec[k] for k in ("model", "tokenizer", "dtype", "device", "repeats", "warmup")}
    cells = [
        time_cell(settings, "bench", method, spec["prompt_len"], output_len, {})
        for method, lengths in spec["grid"].items()
        for output_len in lengths
    ]
    return Plan(
        profile=f"bench-{shapes}",
        description=f"attribution bench ({shapes} shapes)",
        assets={},
        cells=cells,
        est_seconds={"attribution": EST_SECONDS_PER_CELL[shapes]},
    )


def run_attribution_bench(shapes: str, out_dir: str | Path) -> tuple[dict, dict]:
    """Measure the grid of ``shapes`` ('timing' or 'cpu') as fresh cells; return (config, metrics)."""
    from longctx.runner import run_plan

    spec = TIMING if shapes == "timing" else CPU
    _ensure_tokenizer(spec["tokenizer"])
    plan = bench_plan(shapes)
    cells_dir = Path(out_dir) / "cells" / shapes
    run_plan(plan, cells_dir, ReusePolicy(force=True))
    curves: dict[str, list[dict]] = {}
    for cell in plan.cells:
        result = read_result(cells_dir / f"{cell.id}.json")
        if result is None:
            continue
        curves.setdefault(cell.config["method"], []).append(
            {
                "output_len": cell.config["output_len"],
                "status": result.status,
                "time_sec": result.metrics.time_sec.model_dump(),
                "peak_mem": result.metrics.peak_mem.model_dump(),
                "lengths": result.metrics.lengths,
                "config_hash": result.config_hash,
            }
        )
    metrics = {
        "curves": curves,
        "flashtrace_5000_sec": _mean_at(curves.get(FLASHTRACE, []), HEADLINE_LEN),
        "flashtrace_vs_ifr_speedup": _speedup(curves),
    }
    config = {**{k: v for k, v in spec.items() if k != "grid"}, "grid": spec["grid"], "shapes": shapes}
    return config, metrics


def _mean_at(points: list[dict], output_len: int) -> float | None:
    for point in points:
        if point["output_len"] == output_len and point["status"] == "ok":
            return point["time_sec"]["mean"]
    return None


def _speedup(curves: dict) -> dict | None:
    """IFR / FlashTrace time at the longest output length both completed."""
    ifr = {p["output_len"]: p for p in curves.get(IFR, []) if p["status"] == "ok"}
    ft = {p["output_len"]: p for p in curves.get(FLASHTRACE, []) if p["status"] == "ok"}
    common = sorted(set(ifr) & set(ft))
    if not common:
        return None
    length = common[-1]
    return {"output_len": length, "ratio": ifr[length]["time_sec"]["mean"] / ft[length]["time_sec"]["mean"]}
