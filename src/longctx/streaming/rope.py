"""Re-rotating cached keys with the model's own rotary embedding (cos/sin in fp32 from integer positions).

Keys in a transformers KV cache are already rotated by RoPE at the position they were fed at. Moving a
key from position p to p + d is one rotation by d (rotations compose): ``rotate(keys, d)`` computes
cos/sin for the integer offsets d in fp32 with the model's rotary module (fed an fp32 dummy so nothing is
rounded to fp16), rotates the first ``rotary_ndims`` dims in fp32 (GPT-NeoX rotates 25% of each head,
Qwen3 all of it; both use the rotate-half layout) and casts back once. Callers always rotate from a stored
copy by the total offset, never accumulate many small rotations.
"""

from __future__ import annotations

import torch


def rotary_module(model):
    """The model's rotary embedding module (``model.gpt_neox.rotary_emb``, ``model.model.rotary_emb``, ...)."""
    rotary = getattr(model.base_model, "rotary_emb", None)
    if rotary is None:
        raise ValueError(f"{type(model).__name__} has no rotary embedding module at base_model.rotary_emb")
    return rotary


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Rotator:
    """Rotates cached keys by integer position offsets, exactly as the model's attention rotates keys."""

    def __init__(self, model):
        self.rotary = rotary_module(model)
        # cos/sin come out multiplied by attention_scaling (1.0 for default RoPE); a pure rotation divides it out.
        self.scaling = float(getattr(self.rotary, "attention_scaling", 1.0) or 1.0)

    def cos_sin(self, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fp32 cos/sin of shape ``[n, rotary_ndims]`` for integer offsets ``[n]``."""
        dummy = torch.zeros(1, dtype=torch.float32, device=offsets.device)
        cos, sin = self.rotary(dummy, offsets.reshape(1, -1))
        return cos[0].float() / self.scaling, sin[0].float() / self.scaling

    def rotate(self, keys: torch.Tensor, offsets: torch.Tensor | int) -> torch.Tensor:
        """Keys ``[b, h, n, d]`` moved by ``offsets`` positions (one int, or ``[n]`` per key), same dtype."""
        if not isinstance(offsets, torch.Tensor):
            offsets = torch.arange(offsets, offsets + 1, device=keys.device)  # no host-to-device copy, no sync
        cos, sin = self.cos_sin(offsets.to(device=keys.device, dtype=torch.long))
        rot_dims = cos.shape[-1]
        head = keys[..., :rot_dims].float()
        rotated = (head * cos + _rotate_half(head) * sin).to(keys.dtype)
        if rot_dims == keys.shape[-1]:
            return rotated
        return torch.cat((rotated, keys[..., rot_dims:]), dim=-1)
