"""The reference protocol's decode loop: the original's ``_compute_streaming_decode_perplexity`` (3cb8e4b).

What it does differently from the definition (``longctx.streaming.evaluator``), each a switch of ``Quirks`` so
that tests and the departures measurement can turn them off one at a time (all on = the reference protocol):

* ``prefill_cap_total``: the prefill is ``P = min(C_total, N)`` tokens (not ``C``), so with σ > 0 the cache
  starts full and may be pruned right after the prefill;
* ``refeed_last_prefill_token``: the prefill scores ``x_1 … x_{P-1}`` only and the decode loop starts at
  ``x_{P-1}``, which therefore enters the cache a second time; ``N - P`` decode steps;
* ``rotation_in_key_dtype``: the cache's cumulative re-rotation runs in the key dtype (``ReferenceCache``);
* ``loss``: cross-entropy on the model-dtype logits (``model_dtype``, 3cb8e4b as committed), or in fp32 except
  the recompute baseline's prefill (``fp32_except_baseline_prefill``, 254e749 ``--fp32-loss``), or ``fp32``
  everywhere (the quirk off). Each loss is summed into a Python float (``.item()``: a host sync per step,
  inside the timed loop) and PPL = exp of the fp32 mean.

The recompute baseline keeps no sinks: each step runs a fresh forward over the last ``C_total`` tokens at
positions ``0 … C-1`` and computes the logits of all of them (no ``logits_to_keep``). Timing follows the
original: prefill = the prefill forward, its loss and the first prune (streaming) or the forward alone
(baseline, whose prefill loss lands in decode time); decode = total - prefill; TPOT = decode / decode steps;
first-token latency = the first decode forward alone. A tqdm bar runs inside the timed loop, as it did.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from longctx.streaming.base import CacheStats
from longctx.streaming.config import Budget
from longctx.streaming.evaluator import Clock, StreamRun
from longctx.streaming.reference_cache import ReferenceCache

LOSS_MODES = ("fp32_except_baseline_prefill", "model_dtype", "fp32")


@dataclass(frozen=True)
class Quirks:
    """The original decode loop's behaviours (module docstring); the defaults are the reference protocol."""

    prefill_cap_total: bool = True
    refeed_last_prefill_token: bool = True
    rotation_in_key_dtype: bool = True
    loss: str = LOSS_MODES[0]

    def __post_init__(self):
        if self.loss not in LOSS_MODES:
            raise ValueError(f"loss must be one of {', '.join(LOSS_MODES)}, got {self.loss!r}")

    def loss_in_fp32(self, *, baseline_prefill: bool) -> bool:
        if self.loss == "fp32":
            return True
        return self.loss == "fp32_except_baseline_prefill" and not baseline_prefill


def prefill_length(budget: Budget, n_tokens: int, quirks: Quirks) -> int:
    """The original's ``min(max(2, min(C_total, N)), N)``; with the quirk off the definition's ``min(C, N)``."""
    cap = budget.cap_total if quirks.prefill_cap_total else budget.capacity
    return min(max(2, min(cap, n_tokens)), n_tokens)


class _Loss:
    """The original's loss bookkeeping: per-call sums added to a Python float, per-token values kept for the dump."""

    def __init__(self, n_tokens: int):
        self.total = 0.0
        self.count = 0
        self.nll = torch.empty(n_tokens - 1, dtype=torch.float32)

    def add_prefill(self, logits: torch.Tensor, ids: torch.Tensor, scored: int, fp32: bool) -> None:
        """Score ``x_1 … x_scored`` from the prefill logits: one summed cross-entropy, as the original."""
        logits = logits[:scored].float() if fp32 else logits[:scored]
        targets = ids[1 : scored + 1]
        self.total += F.cross_entropy(logits, targets, reduction="sum").item()
        self.nll[:scored] = F.cross_entropy(logits, targets, reduction="none").float().cpu()
        self.count += scored

    def add_step(self, logit: torch.Tensor, ids: torch.Tensor, t: int, fp32: bool) -> None:
        """Score ``x_{t+1}`` from the step's last logit (``.item()``: the original's per-step host sync)."""
        logit = logit.float() if fp32 else logit
        value = F.cross_entropy(logit[None], ids[t + 1 : t + 2], reduction="sum").item()
        self.total += value
        self.nll[t] = value
        self.count += 1

    def ppl(self) -> float:
        """``exp`` of the mean in fp32, as ``torch.exp(torch.tensor(total / count))`` computed it."""
        return float(torch.exp(torch.tensor(self.total / self.count, dtype=torch.float32)))


@torch.no_grad()  # as the original (inference_mode would skip autograd bookkeeping it paid for)
def evaluate_reference(
    model, ids: torch.Tensor, budget: Budget, quirks: Quirks = Quirks(), progress: bool = False
) -> StreamRun:
    """Score ``x_1 … x_{N-1}`` of ``ids`` (1-D, on the model's device) along the original's code path."""
    if budget.method == "recompute":
        return _recompute(model, ids, budget, quirks, progress)
    return _cached(model, ids, budget, quirks, progress)


def _decode_range(prefill: int, n: int, quirks: Quirks) -> range:
    return range(prefill - 1 if quirks.refeed_last_prefill_token else prefill, n - 1)


def _scored_by_prefill(prefill: int, n: int, quirks: Quirks) -> int:
    return prefill - 1 if quirks.refeed_last_prefill_token else min(prefill, n - 1)


def _cached(model, ids: torch.Tensor, budget: Budget, quirks: Quirks, progress: bool) -> StreamRun:
    n, clock = ids.numel(), Clock(ids.device)
    prefill = prefill_length(budget, n, quirks)
    cache = ReferenceCache(model, budget, rotation_in_key_dtype=quirks.rotation_in_key_dtype)
    loss, fp32 = _Loss(n), quirks.loss_in_fp32(baseline_prefill=False)
    start = clock.mark()
    out = model(input_ids=ids[None, :prefill], past_key_values=cache, use_cache=True)
    cache.note_forward(0, prefill)
    loss.add_prefill(out.logits[0], ids, _scored_by_prefill(prefill, n, quirks), fp32)
    cache.after_forward()
    prefill_end = clock.mark()
    steps = _decode_range(prefill, n, quirks)
    first = None
    for t in tqdm(steps, desc="Decode (reference)", unit="tok", disable=not progress, leave=False):
        position = cache.length
        first_start = clock.mark() if first is None else None
        out = model(input_ids=ids[None, t : t + 1], past_key_values=cache, use_cache=True)
        if first is None:
            first = (first_start, clock.mark())
        cache.note_forward(position, 1)
        loss.add_step(out.logits[0, -1], ids, t, fp32)
        cache.after_forward()
    end = clock.mark()
    bound = _cached_attention_bound(budget, n, prefill)
    return _run(clock, loss, start, prefill_end, end, first, len(steps), cache.stats, prefill, bound)


def _cached_attention_bound(budget: Budget, n: int, prefill: int) -> int:
    """Most keys a forward attends to: the prefill, or a cache grown to ``C_soft + R`` (``C_total + 1`` when a
    δ-limited prune leaves ``C_total``); R = 0 keeps everything."""
    R = 1 if budget.method == "start_recent" else budget.compress_every
    grown = n if R == 0 else max(budget.cap_soft + R, budget.cap_total + 1)
    return min(max(prefill, grown), n)


def _recompute(model, ids: torch.Tensor, budget: Budget, quirks: Quirks, progress: bool) -> StreamRun:
    n, clock, window = ids.numel(), Clock(ids.device), budget.cap_total
    prefill = prefill_length(budget, n, quirks)
    loss = _Loss(n)
    start = clock.mark()
    out = model(input_ids=ids[None, :prefill], use_cache=False)
    prefill_end = clock.mark()
    loss.add_prefill(
        out.logits[0], ids, _scored_by_prefill(prefill, n, quirks), quirks.loss_in_fp32(baseline_prefill=True)
    )
    fp32 = quirks.loss_in_fp32(baseline_prefill=False)
    steps = _decode_range(prefill, n, quirks)
    first = None
    for t in tqdm(steps, desc="Decode (reference baseline)", unit="tok", disable=not progress, leave=False):
        context = ids[None, max(0, t + 1 - window) : t + 1]
        first_start = clock.mark() if first is None else None
        out = model(input_ids=context, use_cache=False)
        if first is None:
            first = (first_start, clock.mark())
        loss.add_step(out.logits[0, -1], ids, t, fp32)
    end = clock.mark()
    attended = min(window, n)
    stats = CacheStats(max_attention_len=attended, max_query_position=attended - 1)
    return _run(clock, loss, start, prefill_end, end, first, len(steps), stats, prefill, attended)


def _run(clock: Clock, loss: _Loss, start, prefill_end, end, first, steps, stats, prefill, bound) -> StreamRun:
    total_ms = clock.elapsed_ms(start, end)
    prefill_ms = clock.elapsed_ms(start, prefill_end)
    return StreamRun(
        nll=loss.nll,
        prefill_ms=prefill_ms,
        decode_ms=max(0.0, total_ms - prefill_ms),
        first_token_ms=clock.elapsed_ms(*first) if first is not None else None,
        decode_steps=steps,
        stats=stats,
        prefill_len=prefill,
        ppl=loss.ppl(),
        nll_mean=loss.total / loss.count,
        attention_bound=bound,
    )
