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


def _signed_gain(y_abs: torch.Tensor, sign: torch.Tensor, contrib: torch.Tensor) -> torch.Tensor:
    """||y||_1 - ||y - c||_1 over the last dim, overwriting ``contrib``, without cancellation.

    Per dimension |y| - |y - c| = min(s c, 2|y| - s c) = s c - 2 relu(s c - |y|) with s = sign(y) (+1 at 0):
    each term carries the rounding of c, not of y, so a contribution far smaller than the residual keeps its
    digits (computed as the difference of two L1 norms it would be rounding noise of ||y||_1 once T is large).
    """
    contrib.mul_(sign)
    gain = contrib.sum(-1)
    return gain - 2 * contrib.sub_(y_abs).clamp_min_(0).sum(-1)


def _sign(y: torch.Tensor) -> torch.Tensor:
    return torch.where(y >= 0, 1.0, -1.0).to(y.dtype)


def residual_proximity(y: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """max(0, ||y||_1 - ||y - r||_1) over the last dim."""
    return _signed_gain(y.abs(), _sign(y), r.clone()).clamp_min(0)


def head_proximity_sum(y: torch.Tensor, weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """sum_h max(0, ||y_s||_1 - ||y_s - a_hsc u_hc||_1) -> [S, C], one proximity per (source, head) term.

    ``y`` [S, d] the sinks' post-attention residuals, ``weights`` a [H, S, C] attention weights (or aggregated
    rows), ``values`` u [H, C, d] the sources' projected values. Heads are taken a few at a time so that no
    block exceeds ``BLOCK_ELEMENTS``.
    """
    n_heads, n_sinks, n_src = weights.shape
    group = max(1, BLOCK_ELEMENTS // max(1, n_sinks * n_src * y.shape[-1]))
    y_abs, sign = y.abs()[None, :, None, :], _sign(y)[None, :, None, :]
    out = torch.zeros(n_sinks, n_src, dtype=y.dtype, device=y.device)
    for h0 in range(0, n_heads, group):
        h1 = min(n_heads, h0 + group)
        block = weights[h0:h1, :, :, None] * values[h0:h1, None, :, :]  # [h, S, C, d]
        out += _signed_gain(y_abs, sign, block).clamp_min_(0).sum(0)
    return out


def layer_normalized(proximities: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """Per-layer shares: proximities [..., J] over (their sum + the residual's proximity [...] + EPS)."""
    return proximities / (proximities.sum(-1) + residual + EPS)[..., None]
