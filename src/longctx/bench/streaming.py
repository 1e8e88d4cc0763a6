"""Streaming decode benchmark: TPOT per cache method and implementation versus the weight-streaming floor.

Batch-1 decoding reads every weight once per token (all but the input embedding table, of which it reads
one row), so ``streamed_weights_bytes / read bandwidth`` is a floor on TPOT (``hbm_floor_ms``); the read
bandwidth is that of a GEMV over a buffer far larger than the last-level cache (``bandwidth.read_bandwidth``),
the fastest of a measurement before and one after the variants; a copy's bandwidth is reported beside it.
The benchmark reports how far each method is from the floor (``ratio_to_floor``), its speedup over
recompute and the compiled-vs-eager TPOT ratio, side by side in one process, and each variant's peak
memory through the one probe (``PeakMemory``; on CPU exact tensor bytes in an extra untimed run). Random
weights: speed does not depend on them. The ``plain`` implementation reproduces the original
slice-and-concatenate cache, so the table shows whether Lazy Pruning's speedup survives an efficient
(``fast``) cache; ``compiled`` runs the static ring cache with one torch.compile'd graph per step (CUDA
graphs on a GPU), whose compile time and graph breaks/recompilations are reported per variant and kept out
of TPOT.

Shapes: ``timing`` is the Pythia-2.8B architecture (fp16, C = 2048 on a GPU; fp32 and a short stream on a
CPU, where batch-1 decoding of an 11 GB model is memory-bound too); ``cpu`` is a tiny model that only
exercises the harness (its TPOT is Python-overhead-bound).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from longctx.measure.memory import PeakMemory
from longctx.measure.schema import summarize_peaks
from longctx.models import parse_dtype, random_model
from longctx.stats import summarize
from longctx.streaming.compiled import make_evaluator
from longctx.streaming.config import cache_budget

from .bandwidth import copy_bandwidth, read_bandwidth

# (label, method, impl, extra knobs)
VARIANTS = (
    ("recompute", "recompute", "fast", {}),
    ("start_recent_fast", "start_recent", "fast", {}),
    ("start_recent_plain", "start_recent", "plain", {}),
    ("start_recent_compiled", "start_recent", "compiled", {}),
    ("lazy_fast", "lazy", "fast", {"lazy": True}),
    ("lazy_plain", "lazy", "plain", {"lazy": True}),
    ("lazy_compiled", "lazy", "compiled", {"lazy": True}),
)
FLOOR_RULE = (
    "hbm_floor_ms = streamed_weights_bytes / read bandwidth (GEMV; decode is read-bound), the fastest of the"
    " measurements before and after the variants; the copy bandwidth is reported, not used"
)


@dataclass(frozen=True)
class StreamingBenchConfig:
    arch: str = "pythia-2.8b"
    dtype: str = "float16"
    device: str = "cuda"
    cap_total: int = 2048
    n_sink: int = 32
    compress_every: int = 64
    baseline_sink: int = 0
    decode_tokens: int = 256
    warmup: int = 1
    repeats: int = 3
    bandwidth_bytes: int = 1 << 30
    seed: int = 0
    compile_backend: str = "inductor"  # of the compiled variants (CUDA graphs on a GPU)
    variants: tuple[str, ...] | None = None  # labels of VARIANTS to run (None: all)


CPU_SHAPES = dict(
    arch="tiny-gpt-neox",
    dtype="float32",
    device="cpu",
    cap_total=256,
    n_sink=4,
    compress_every=8,
    decode_tokens=128,
    warmup=1,
    repeats=3,
    bandwidth_bytes=1 << 29,  # 16x this machine's 32 MiB L3
)
# The real Pythia-2.8B architecture on a CPU: fp32 (11.1 GB), a short stream; recompute (compute-bound
# there, minutes per token at C = 2048) and the plain cache are left out to keep the run to minutes.
CPU_TIMING_SHAPES = dict(
    dtype="float32",
    device="cpu",
    cap_total=32,
    n_sink=4,
    compress_every=8,
    decode_tokens=48,
    warmup=1,
    repeats=3,
    variants=("start_recent_fast", "start_recent_compiled", "lazy_fast", "lazy_compiled"),
)


def bench_config(shapes: str, device_type: str) -> StreamingBenchConfig:
    """The config of ``shapes`` ('timing' or 'cpu') on a device of ``device_type`` ('cuda' or 'cpu')."""
    if shapes == "cpu":
        return StreamingBenchConfig(**CPU_SHAPES)
    return StreamingBenchConfig(**(CPU_TIMING_SHAPES if device_type == "cpu" else {}))


def _budget(cfg: StreamingBenchConfig, method: str, lazy: bool = False):
    knobs = {"compress_every": cfg.compress_every} if lazy else {}
    sinks = cfg.baseline_sink if method == "recompute" else cfg.n_sink
    return cache_budget(method, n_sink=sinks, cap_total=cfg.cap_total, **knobs)


def streamed_weights_bytes(model) -> int:
    """Bytes a decode step reads: every parameter but an untied input embedding table (one row is read)."""
    table = model.get_input_embeddings().weight
    untied = all(p is not table for p in model.get_output_embeddings().parameters())
    return sum(p.nbytes for p in model.parameters() if not (untied and p is table))


def run_streaming_bench(cfg: StreamingBenchConfig) -> dict:
    """Measure every variant's TPOT on the same random-weight model and token stream; return ``metrics``."""
    device = torch.device(cfg.device)
    dtype = parse_dtype(cfg.dtype)
    model = random_model(f"random:{cfg.arch}", dtype, cfg.device, cfg.seed)
    weights_bytes = sum(p.nbytes for p in model.parameters())
    streamed = streamed_weights_bytes(model)
    gen = torch.Generator().manual_seed(cfg.seed)
    n_tokens = cfg.cap_total + cfg.decode_tokens + 1
    ids = torch.randint(0, model.config.vocab_size, (n_tokens,), generator=gen).to(device)
    copy = copy_bandwidth(device, cfg.bandwidth_bytes)
    reads = [read_bandwidth(device, dtype, cfg.bandwidth_bytes)]
    variants = {}
    for label, method, impl, extra in VARIANTS:
        if cfg.variants is None or label in cfg.variants:
            variants[label] = _measure_variant(cfg, model, ids, method, impl, _budget(cfg, method, **extra))
    reads.append(read_bandwidth(device, dtype, cfg.bandwidth_bytes))
    read = max(reads, key=lambda r: r["bytes_per_s"])
    floor_ms = 1000.0 * streamed / read["bytes_per_s"]
    for entry in variants.values():
        entry["ratio_to_floor"] = summarize([t / floor_ms for t in entry["tpot_ms"]["values"]])["mean"]
    base = variants.get("recompute", {}).get("tpot_ms", {}).get("mean")
    for entry in variants.values():
        entry["speedup_vs_recompute"] = base / entry["tpot_ms"]["mean"] if base else None
    kv_bytes = _kv_bytes(model, cfg.cap_total)
    return {
        "config": asdict(cfg),
        "weights_bytes": weights_bytes,
        "streamed_weights_bytes": streamed,
        "kv_cache_bytes_at_capacity": kv_bytes,
        "bandwidth": {"bytes_per_s": read["bytes_per_s"], "rule": FLOOR_RULE, "read": reads, "copy": copy},
        "hbm_floor_ms": floor_ms,
        "hbm_floor_with_kv_ms": 1000.0 * (streamed + kv_bytes) / read["bytes_per_s"],
        "tpot_ms": {k: v["tpot_ms"]["mean"] for k, v in variants.items()},
        "ratio_to_floor": {k: v["ratio_to_floor"] for k, v in variants.items()},
        "speedup_vs_recompute": {k: v["speedup_vs_recompute"] for k, v in variants.items()},
        "compiled_vs_eager": _compiled_vs_eager(variants),
        "variants": variants,
    }


def _measure_variant(cfg: StreamingBenchConfig, model, ids: torch.Tensor, method: str, impl: str, budget) -> dict:
    """Warm-up, the exact memory pass (CPU only) and the timed repeats of one variant."""
    evaluate = make_evaluator(model, ids, budget, impl, compile=impl == "compiled", backend=cfg.compile_backend)
    for _ in range(cfg.warmup):
        evaluate()
    memory = PeakMemory(cuda=ids.device.type == "cuda", baseline=model)
    memory.exact_pass(evaluate)
    tpots, peaks = [], []
    for _ in range(cfg.repeats):
        with memory.timed():
            run = evaluate()
        tpots.append(run.tpot_ms)
        peaks.append(memory.record())
    return {
        "method": method,
        "impl": impl,
        "tpot_ms": summarize(tpots),
        "bytes_moved_per_step": run.stats.bytes_moved / max(run.decode_steps, 1),
        "prune_events": run.stats.prune_events,
        "compile": run.compile,
        "peak_mem": summarize_peaks(peaks),
    }


def _compiled_vs_eager(variants: dict) -> dict:
    """Eager (fast cache) TPOT / compiled TPOT per method run both ways: above 1, compiling pays."""
    return {
        label.removesuffix("_compiled"): variants[eager]["tpot_ms"]["mean"] / entry["tpot_ms"]["mean"]
        for label, entry in variants.items()
        if entry["impl"] == "compiled" and (eager := label.replace("_compiled", "_fast")) in variants
    }


def _kv_bytes(model, length: int) -> int:
    """Bytes of keys and values a full cache holds (read once per decode step by attention)."""
    cfg = model.config
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    element = next(model.parameters()).element_size()
    return 2 * cfg.num_hidden_layers * heads * head_dim * length * element
