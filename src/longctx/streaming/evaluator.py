"""The decode-loop evaluator: prefill, then one token per step, per-token NLL in fp32, timing and cache stats.

Prefill feeds the first ``P = min(C, N)`` tokens in one causal forward; its logits score ``x_1 … x_P``.
Step t (``t = P … N-2``) feeds ``x_t`` and scores ``x_{t+1}``: through the bounded cache (start_recent,
lazy) or, for recompute, by a fresh forward over the window ``x_0 … x_{S-1}, x_{t-C+S+1} … x_t`` at
positions ``0 … C-1``. NLL stays on the device (no host sync per step); timing uses CUDA events on a GPU
and ``perf_counter`` on CPU. Maintenance vs forward time is measured only with ``profile_maintenance``
(it needs a sync around every cache operation).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from longctx.streaming.base import CacheStats, StreamingCache
from longctx.streaming.cache import FastStreamingCache
from longctx.streaming.config import Budget
from longctx.streaming.plain_cache import PlainStreamingCache
from longctx.streaming.rope import Rotator

CACHE_IMPLS = {"fast": FastStreamingCache, "plain": PlainStreamingCache}


@dataclass
class StreamRun:
    """One pass over the stream: per-token NLL (CPU, fp32) and raw measurements."""

    nll: torch.Tensor
    prefill_ms: float
    decode_ms: float
    first_token_ms: float | None
    decode_steps: int
    stats: CacheStats = field(default_factory=CacheStats)
    maintenance_ms: float | None = None
    forward_ms: float | None = None
    compile: dict | None = None  # compiled decoding only: graph breaks, recompiles, compile time, mode, backend
    prefill_len: int | None = None  # tokens in the prefill forward (None: the budget's min(C, N))
    ppl: float | None = None  # set when the protocol computes PPL its own way (reference: exp of an fp32 mean)
    nll_mean: float | None = None  # likewise (reference: the original's summed losses over the tokens scored)
    attention_bound: int | None = None  # most keys one forward can attend to (None: the budget's bound)

    @property
    def total_ms(self) -> float:
        return self.prefill_ms + self.decode_ms

    @property
    def tpot_ms(self) -> float | None:
        return self.decode_ms / self.decode_steps if self.decode_steps else None

    @property
    def tokens_per_s(self) -> float | None:
        return 1000.0 * self.decode_steps / self.decode_ms if self.decode_steps and self.decode_ms > 0 else None


class Clock:
    """Timestamps without host syncs: CUDA events on a GPU, perf_counter on CPU; read them once at the end."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def elapsed_ms(self, start, stop) -> float:
        if self.cuda:
            stop.synchronize()
            return float(start.elapsed_time(stop))
        return 1000.0 * (stop - start)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


class _Profiler:
    """Accumulates synced wall time of cache maintenance vs model forwards (only when profiling)."""

    def __init__(self, clock: Clock, enabled: bool):
        self.clock, self.enabled = clock, enabled
        self.totals = {"maintenance": 0.0, "forward": 0.0}

    def run(self, kind: str, fn, *args, **kwargs):
        if not self.enabled:
            return fn(*args, **kwargs)
        self.clock.sync()
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.clock.sync()
        self.totals[kind] += 1000.0 * (time.perf_counter() - start)
        return out


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-log p(target) from fp32 log_softmax, whatever the model dtype."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return -logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def make_cache(model, budget: Budget, impl: str, n_tokens: int) -> StreamingCache:
    """A fresh bounded cache (``impl`` fast or plain) sized for a stream of ``n_tokens``."""
    return CACHE_IMPLS[impl](budget, Rotator(model), model.config.num_hidden_layers, n_tokens)


@torch.inference_mode()
def evaluate_stream(
    model,
    ids: torch.Tensor,
    budget: Budget,
    impl: str = "fast",
    profile_maintenance: bool = False,
    progress: bool = False,
) -> StreamRun:
    """Score ``x_1 … x_{N-1}`` of ``ids`` (1-D, on the model's device) with the budget's method."""
    device = ids.device
    n = ids.numel()
    clock, prefill_len = Clock(device), budget.prefill_len(n)
    profiler = _Profiler(clock, profile_maintenance)
    nll = torch.empty(n - 1, dtype=torch.float32, device=device)
    cache = None if budget.method == "recompute" else make_cache(model, budget, impl, n)
    t0 = clock.mark()
    if cache is None:
        logits = model(input_ids=ids[None, :prefill_len], use_cache=False).logits[0]
    else:
        position = cache.next_position(prefill_len)
        positions = torch.arange(position, position + prefill_len, device=device)[None]
        logits = model(input_ids=ids[None, :prefill_len], position_ids=positions, past_key_values=cache).logits[0]
        cache.finish_step(prefill_len)
    scored = min(prefill_len, n - 1)
    nll[:scored] = token_nll(logits[:scored], ids[1 : scored + 1])
    t1 = clock.mark()
    first = None
    loop = tqdm(
        range(prefill_len, n - 1), desc=budget.method, unit="tok", disable=not progress, mininterval=1.0, leave=False
    )
    for t in loop:
        if cache is None:
            logit = _recompute_logit(model, ids, t, budget, profiler)
        else:
            logit = _cached_logit(model, ids, t, cache, profiler)
        nll[t] = token_nll(logit, ids[t + 1])
        if first is None:
            first = clock.mark()
    t2 = clock.mark()
    stats = cache.stats if cache is not None else CacheStats(max_attention_len=budget.max_attention_len(n))
    if cache is None:
        stats.max_query_position = budget.max_attention_len(n) - 1
    return StreamRun(
        nll=nll.cpu(),
        prefill_ms=clock.elapsed_ms(t0, t1),
        decode_ms=clock.elapsed_ms(t1, t2),
        first_token_ms=clock.elapsed_ms(t1, first) if first is not None else None,
        decode_steps=max(n - 1 - prefill_len, 0),
        stats=stats,
        prefill_len=prefill_len,
        maintenance_ms=profiler.totals["maintenance"] if profile_maintenance else None,
        forward_ms=profiler.totals["forward"] if profile_maintenance else None,
    )


def _cached_logit(model, ids, t: int, cache: StreamingCache, profiler: _Profiler) -> torch.Tensor:
    position = profiler.run("maintenance", cache.next_position, 1)
    positions = torch.arange(position, position + 1, device=ids.device)[None]  # a kernel, not a host copy
    out = profiler.run("forward", model, input_ids=ids[None, t : t + 1], position_ids=positions, past_key_values=cache)
    profiler.run("maintenance", cache.finish_step, 1)
    return out.logits[0, -1]


def recompute_window(ids: torch.Tensor, t: int, budget: Budget) -> torch.Tensor:
    """The tokens recompute feeds to score ``x_{t+1}``: the first S, then the last ``C - S`` up to ``x_t``."""
    recent = ids[t - budget.capacity + budget.n_sink + 1 : t + 1]
    return torch.cat([ids[: budget.n_sink], recent]) if budget.n_sink else recent


def _recompute_logit(model, ids, t: int, budget: Budget, profiler: _Profiler) -> torch.Tensor:
    window = recompute_window(ids, t, budget)
    out = profiler.run("forward", model, input_ids=window[None], use_cache=False, logits_to_keep=1)
    return out.logits[0, -1]
