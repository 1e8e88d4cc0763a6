"""IFR's route arithmetic (Ferrando & Voita, 2024), shared by IFR and FlashTrace.

A contribution c to a post-attention residual y counts by its proximity ``max(0, ||y||_1 - ||y - c||_1)``.
The contributions are the (source token j, head h) terms ``a_hj W_O,h v_hj``: each gets its own proximity,
and a token's score is the sum over heads of its terms' proximities (as the original and the paper
define it; summing the heads before the proximity is a different, smaller quantity). The residual term
competes with all (j, h) terms, and proximities are normalized per layer.
"""

from __future__ import annotations

import torch

EPS = 1e-12  # the original's guard in the per-layer normalizer
BLOCK_ELEMENTS = 1 << 25  # largest [heads, sinks, sources, d] block formed at once (128 MiB in fp32)


def residual_proximity(y: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """max(0, ||y||_1 - ||y - r||_1) over the last dim."""
    return (y.abs().sum(-1) - (y - r).abs().sum(-1)).clamp_min(0)


def head_proximity_sum(y: torch.Tensor, weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """sum_h max(0, ||y_s||_1 - ||y_s - a_hsc u_hc||_1) -> [S, C], one proximity per (source, head) term.

    ``y`` [S, d] the sinks' post-attention residuals, ``weights`` a [H, S, C] attention weights (or aggregated
    rows), ``values`` u [H, C, d] the sources' projected values. Heads are taken a few at a time so that no
    block exceeds ``BLOCK_ELEMENTS``.
    """
    n_heads, n_sinks, n_src = weights.shape
    per_head = max(1, n_sinks * n_src * y.shape[-1])
    group = max(1, BLOCK_ELEMENTS // per_head)
    y_norm = y.abs().sum(-1)[:, None]
    out = torch.zeros(n_sinks, n_src, dtype=y.dtype, device=y.device)
    for h0 in range(0, n_heads, group):
        h1 = min(n_heads, h0 + group)
        block = weights[h0:h1, :, :, None] * values[h0:h1, None, :, :]  # [h, S, C, d]
        distance = block.sub_(y[None, :, None, :]).abs_().sum(-1)
        out += (y_norm[None] - distance).clamp_min_(0).sum(0)
    return out


def layer_normalized(proximities: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """Per-layer shares: proximities [..., J] over (their sum + the residual's proximity [...] + EPS)."""
    return proximities / (proximities.sum(-1) + residual + EPS)[..., None]
