"""`make bench` on CPU shapes: the harness measures every variant and reports them against the floor."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from longctx.architectures import make_config
from longctx.bench.bandwidth import copy_bandwidth, read_bandwidth
from longctx.bench.report import machine_slug
from longctx.bench.streaming import (
    CPU_SHAPES,
    CPU_TIMING_SHAPES,
    VARIANTS,
    StreamingBenchConfig,
    bench_config,
    run_streaming_bench,
    streamed_weights_bytes,
)
from longctx.cli import main
from longctx.measure.memory import SEPARATE_PASS, TENSOR_SOURCE
from longctx.models import random_model


def test_copy_bandwidth_is_positive_and_keeps_raw_values():
    bw = copy_bandwidth(torch.device("cpu"), 1 << 20, repeats=3)
    assert bw["bytes_per_s"] > 0 and bw["copy_ms"]["n"] == 3 and len(bw["copy_ms"]["values"]) == 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_read_bandwidth_reads_a_matrix_of_the_weights_dtype(dtype):
    bw = read_bandwidth(torch.device("cpu"), dtype, 1 << 20, repeats=3)
    assert bw["buffer_bytes"] == 1 << 20 and bw["dtype"] == str(dtype).removeprefix("torch.")
    assert bw["gemv_ms"]["n"] == 3
    assert bw["bytes_per_s"] == pytest.approx(bw["buffer_bytes"] / (min(bw["gemv_ms"]["values"]) / 1000))
    assert "GEMV" in bw["rule"]


def test_streamed_weights_leave_out_an_untied_input_embedding_only():
    untied = random_model("random:tiny-gpt-neox", torch.float32, "cpu", 0)
    table = untied.get_input_embeddings().weight.nbytes
    assert streamed_weights_bytes(untied) == sum(p.nbytes for p in untied.parameters()) - table
    tied = AutoModelForCausalLM.from_config(make_config("tiny-qwen3", tie_word_embeddings=True))
    assert tied.get_output_embeddings().weight is tied.get_input_embeddings().weight
    assert streamed_weights_bytes(tied) == sum(p.nbytes for p in tied.parameters())


def test_cpu_timing_shapes_are_the_real_pythia_architecture_in_fp32_without_recompute():
    cfg = bench_config("timing", "cpu")
    assert cfg.arch == "pythia-2.8b" and cfg.dtype == "float32" and cfg.device == "cpu"
    assert "recompute" not in cfg.variants and {"lazy_fast", "lazy_compiled"} <= set(cfg.variants)
    assert bench_config("timing", "cuda") == StreamingBenchConfig()
    assert bench_config("cpu", "cpu") == StreamingBenchConfig(**CPU_SHAPES)
    assert set(CPU_TIMING_SHAPES["variants"]) <= {label for label, *_ in VARIANTS}


def test_attribution_timing_shapes_need_a_gpu(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["bench", "attribution", "--shapes", "timing"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


@pytest.mark.parametrize(("shapes", "seconds"), [("cpu", 10), ("timing", 120)])
def test_attribution_bench_plan_carries_its_own_time_estimate(shapes, seconds):
    """The runner's progress line and time limits read the bench's estimate, not the 10-minute default."""
    from longctx.bench.attribution import bench_plan
    from longctx.estimate import DEFAULT_SECONDS, estimate

    plan = bench_plan(shapes)
    assert {estimate(plan, cell).seconds for cell in plan.cells} == {seconds} != {DEFAULT_SECONDS}


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
    bandwidth = m["bandwidth"]
    assert len(bandwidth["read"]) == 2 and bandwidth["bytes_per_s"] == max(r["bytes_per_s"] for r in bandwidth["read"])
    assert bandwidth["copy"]["bytes_per_s"] > 0 and "read" in bandwidth["rule"]
    assert m["hbm_floor_ms"] == pytest.approx(1000 * m["streamed_weights_bytes"] / bandwidth["bytes_per_s"])
    assert m["streamed_weights_bytes"] < m["weights_bytes"]  # tiny-gpt-neox's input embedding is not tied
    for label in labels:
        assert m["ratio_to_floor"][label] == pytest.approx(m["variants"][label]["tpot_ms"]["mean"] / m["hbm_floor_ms"])
        peak = m["variants"][label]["peak_mem"]
        assert peak["source"] == TENSOR_SOURCE + SEPARATE_PASS and peak["allocated_bytes"]["std"] == 0
        assert peak["allocated_bytes"]["mean"] > m["weights_bytes"]
    assert set(m["compiled_vs_eager"]) == {"start_recent", "lazy"}
    assert m["compiled_vs_eager"]["lazy"] == pytest.approx(m["tpot_ms"]["lazy_fast"] / m["tpot_ms"]["lazy_compiled"])
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


def test_streaming_bench_runs_a_subset_of_variants_without_recompute():
    cfg = StreamingBenchConfig(
        **{
            **CPU_SHAPES,
            "cap_total": 16,
            "n_sink": 2,
            "compress_every": 4,
            "decode_tokens": 4,
            "warmup": 0,
            "repeats": 1,
            "bandwidth_bytes": 1 << 20,
            "variants": ("lazy_fast",),
        }
    )
    m = run_streaming_bench(cfg)
    assert list(m["variants"]) == ["lazy_fast"] and m["speedup_vs_recompute"] == {"lazy_fast": None}
    assert m["compiled_vs_eager"] == {}
