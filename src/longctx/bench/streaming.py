"""Streaming decode benchmark: TPOT per cache method and implementation versus the weight-streaming floor.

Batch-1 decoding reads every weight once per token, so ``weights_bytes / bandwidth`` is a floor on
TPOT (``hbm_floor_ms``); the benchmark reports how far each method is from it (``ratio_to_floor``) and
its speedup over recompute, side by side in one process. Random weights: speed does not depend on them.
The ``plain`` implementation reproduces the original slice-and-concatenate cache, so the table shows
whether Lazy Pruning's speedup survives an efficient (``fast``) cache; ``compiled`` runs the static ring
cache with one torch.compile'd graph per step (CUDA graphs on a GPU), whose compile time and graph
breaks/recompilations are reported per variant and kept out of TPOT.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from longctx.models import parse_dtype, random_model
from longctx.stats import summarize
from longctx.streaming.compiled import make_evaluator
from longctx.streaming.config import cache_budget

from .bandwidth import copy_bandwidth

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
    bandwidth_bytes=1 << 26,
)


def _budget(cfg: StreamingBenchConfig, method: str, lazy: bool = False):
    knobs = {"compress_every": cfg.compress_every} if lazy else {}
    sinks = cfg.baseline_sink if method == "recompute" else cfg.n_sink
    return cache_budget(method, n_sink=sinks, cap_total=cfg.cap_total, **knobs)


def run_streaming_bench(cfg: StreamingBenchConfig) -> dict:
    """Measure every variant's TPOT on the same random-weight model and token stream; return ``metrics``."""
    device = torch.device(cfg.device)
    model = random_model(f"random:{cfg.arch}", parse_dtype(cfg.dtype), cfg.device, cfg.seed)
    weights_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    gen = torch.Generator().manual_seed(cfg.seed)
    n_tokens = cfg.cap_total + cfg.decode_tokens + 1
    ids = torch.randint(0, model.config.vocab_size, (n_tokens,), generator=gen).to(device)
    bandwidth = copy_bandwidth(device, cfg.bandwidth_bytes)
    floor_ms = 1000.0 * weights_bytes / bandwidth["bytes_per_s"]
    kv_bytes = _kv_bytes(model, cfg.cap_total)
    variants = {}
    for label, method, impl, extra in VARIANTS:
        budget = _budget(cfg, method, **extra)
        tpots = []
        evaluate = make_evaluator(model, ids, budget, impl, compile=impl == "compiled", backend=cfg.compile_backend)
        for index in range(cfg.warmup + cfg.repeats):
            run = evaluate()
            if index >= cfg.warmup:
                tpots.append(run.tpot_ms)
        variants[label] = {
            "method": method,
            "impl": impl,
            "tpot_ms": summarize(tpots),
            "ratio_to_floor": summarize([t / floor_ms for t in tpots])["mean"],
            "bytes_moved_per_step": run.stats.bytes_moved / max(run.decode_steps, 1),
            "prune_events": run.stats.prune_events,
            "compile": run.compile,
        }
    base = variants["recompute"]["tpot_ms"]["mean"]
    for entry in variants.values():
        entry["speedup_vs_recompute"] = base / entry["tpot_ms"]["mean"]
    return {
        "config": asdict(cfg),
        "weights_bytes": weights_bytes,
        "kv_cache_bytes_at_capacity": kv_bytes,
        "bandwidth": bandwidth,
        "hbm_floor_ms": floor_ms,
        "hbm_floor_with_kv_ms": 1000.0 * (weights_bytes + kv_bytes) / bandwidth["bytes_per_s"],
        "tpot_ms": {k: v["tpot_ms"]["mean"] for k, v in variants.items()},
        "ratio_to_floor": {k: v["ratio_to_floor"] for k, v in variants.items()},
        "speedup_vs_recompute": {k: v["speedup_vs_recompute"] for k, v in variants.items()},
        "variants": variants,
    }


def _kv_bytes(model, length: int) -> int:
    """Bytes of keys and values a full cache holds (read once per decode step by attention)."""
    cfg = model.config
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    element = next(model.parameters()).element_size()
    return 2 * cfg.num_hidden_layers * heads * head_dim * length * element
