"""What the reference protocol's methods share: the original's result layout, trainable parameters, the
CUDA cache flushes and IG batch size of the original experiment (flashtrace llm_attr / run_time_curve)."""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch

from longctx.attribution.inputs import AttributionInputs

ORIGINAL_MAX_CONTEXT_FALLBACK = 200000  # run_time_curve's max_input_len when the config has no context limit
ORIGINAL_IG_STEPS = 20


def original_columns(inputs: AttributionInputs, scores: torch.Tensor) -> torch.Tensor:
    """[G, T] scores per absolute position -> the original's [G, n_user + G] (user-prompt columns, then every
    position from the end of the formatted prompt), values and NaNs kept as they are."""
    columns = torch.cat([torch.arange(*inputs.user_span), torch.arange(inputs.prompt_len, inputs.total)])
    return scores.detach().to("cpu", torch.float32)[:, columns]


def original_ig_batch_size(model, total_tokens: int) -> int:
    """IG points per forward: min(20, floor((max_position_embeddings - 100) / T)), at least 1."""
    limit = getattr(model.config, "max_position_embeddings", None) or ORIGINAL_MAX_CONTEXT_FALLBACK
    return min(ORIGINAL_IG_STEPS, max(1, math.floor((limit - 100) / max(1, total_tokens))))


def release_cached_memory() -> None:
    """``torch.cuda.empty_cache()``, which the original calls after every IG batch."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


@contextmanager
def trainable_parameters(model):
    """The model's parameters require grad inside (the original never freezes them, so its backward passes
    also compute weight gradients); on exit the flags are restored and the ``.grad`` buffers freed (a fresh
    worker per cell: leftovers of earlier methods in one process are not emulated, see the departures)."""
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        yield model
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.grad = None
            p.requires_grad_(flag)
