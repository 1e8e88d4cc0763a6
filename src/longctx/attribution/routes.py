"""IFR's route arithmetic (Ferrando & Voita, 2024), shared by IFR and FlashTrace.

A contribution c to a post-attention residual y counts by its proximity ``max(0, ||y||_1 - ||y - c||_1)``;
the residual term competes as one more contribution, and proximities are normalized per layer.
"""

from __future__ import annotations

import torch


def proximity(y: torch.Tensor, contrib: torch.Tensor) -> torch.Tensor:
    """max(0, ||y||_1 - ||y - c||_1) over the last dim; y [..., d] broadcasts against contrib [..., C, d]."""
    return (y.abs().sum(-1)[..., None] - (y[..., None, :] - contrib).abs().sum(-1)).clamp_min(0)


def residual_proximity(y: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return (y.abs().sum(-1) - (y - r).abs().sum(-1)).clamp_min(0)
