"""`make bench` on CPU shapes: the harness measures every variant and reports them against the floor."""

import json

import pytest

from longctx.bench.bandwidth import copy_bandwidth
from longctx.bench.report import machine_slug
from longctx.bench.streaming import CPU_SHAPES, VARIANTS, StreamingBenchConfig, run_streaming_bench


def test_copy_bandwidth_is_positive_and_keeps_raw_values():
    import torch

    bw = copy_bandwidth(torch.device("cpu"), 1 << 20, repeats=3)
    assert bw["bytes_per_s"] > 0 and bw["copy_ms"]["n"] == 3 and len(bw["copy_ms"]["values"]) == 3


def test_streaming_bench_reports_every_variant_against_the_floor():
    cfg = StreamingBenchConfig(
        **{
            **CPU_SHAPES,
            "cap_total": 32,
            "n_sink": 2,
            "compress_every": 4,
            "decode_tokens": 8,
            "warmup": 0,
            "repeats": 2,
            "bandwidth_bytes": 1 << 20,
            "compile_backend": "aot_eager",  # dynamo without a minute of C++ compilation per graph
        }
    )
    m = run_streaming_bench(cfg)
    labels = {label for label, *_ in VARIANTS}
    assert set(m["tpot_ms"]) == labels == set(m["ratio_to_floor"]) == set(m["speedup_vs_recompute"])
    assert m["speedup_vs_recompute"]["recompute"] == 1.0
    assert m["hbm_floor_ms"] > 0 and m["hbm_floor_with_kv_ms"] > m["hbm_floor_ms"]
    for label in labels:
        assert m["ratio_to_floor"][label] == pytest.approx(m["variants"][label]["tpot_ms"]["mean"] / m["hbm_floor_ms"])
    assert m["variants"]["lazy_fast"]["prune_events"] < m["variants"]["start_recent_fast"]["prune_events"]
    for label in ("start_recent_compiled", "lazy_compiled"):
        assert m["variants"][label]["compile"]["graph_breaks"] == m["variants"][label]["compile"]["recompiles"] == 0
        assert m["variants"][label]["prune_events"] == m["variants"][label.replace("compiled", "fast")]["prune_events"]
    json.dumps(m)


def test_machine_slug():
    assert (
        machine_slug({"identity": {"gpu": {"devices": [{"name": "NVIDIA H100 80GB HBM3"}]}}}) == "nvidia-h100-80gb-hbm3"
    )
    assert machine_slug({"identity": {"gpu": {"devices": []}}}) == "cpu"
