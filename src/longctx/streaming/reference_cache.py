"""The reference protocol's cache: what the original pruning wrapper (3cb8e4b) did to a DynamicCache, as a Cache.

Between prunes it is a DynamicCache: every forward concatenates the new keys and values onto copies of the
whole cache (``DynamicLayer.update``), and positions are cache indices because the model is called without
position ids. After each forward ``after_forward()`` applies the wrapper's rule (3cb8e4b ``update``):

* prune when ``len - C_soft >= max(R, 1)`` (never when R = 0); target ``C_soft``, or with δ > 0
  ``min(max(len - δ, C_soft), C_total)`` (so δ is a no-op when σ = 0);
* keep ``sink = min(S, len)`` first entries and the last ``min(target - sink, len - sink)``;
* copy them into per-layer buffers of ``C_total`` entries allocated (``torch.empty``) at the first prune and
  reused, and point the layer at the buffer's first ``kept`` entries (a view);
* re-rotate, in place, every kept non-sink key from its current value by ``-(entries dropped)``: cos/sin
  computed in fp32 from the model's ``inv_freq`` and cast to the key dtype, the rotation done in the key
  dtype (fp16 for the paper), so rotations accumulate over the key's life (strict: ~W of them). Sinks and
  values are never touched. ``rotation_in_key_dtype=False`` rotates in fp32 and casts once (the quirk off).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, DynamicLayer

from longctx.streaming.base import CacheStats
from longctx.streaming.config import Budget
from longctx.streaming.policy import target_length
from longctx.streaming.rope import rotary_module


@dataclass(frozen=True)
class PruneEvent:
    """One prune, as the original wrapper logged it: update call index, length before, entries kept and dropped."""

    step: int
    seq_len: int
    kept: int
    dropped: int


class ReferenceCache(Cache):
    """DynamicCache layers plus the original wrapper's prune (buffers, copy, cumulative in-place re-rotation)."""

    def __init__(self, model, budget: Budget, *, rotation_in_key_dtype: bool = True):
        super().__init__(layers=[DynamicLayer() for _ in range(model.config.num_hidden_layers)])
        self.budget = budget
        self.inv_freq = rotary_module(model).inv_freq  # fp32, as the wrapper read it (rotary_emb.inv_freq)
        self.half = self.inv_freq.numel()  # rotary_ndims // 2
        self.rotation_in_key_dtype = rotation_in_key_dtype
        self.key_buffers: list[torch.Tensor | None] = [None] * len(self.layers)
        self.value_buffers: list[torch.Tensor | None] = [None] * len(self.layers)
        self._cos_sin: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.events: list[PruneEvent] = []
        self.stats = CacheStats()
        self._calls = 0  # the wrapper's _step: update calls so far, the prefill's included

    @property
    def length(self) -> int:
        return self.layers[0].get_seq_length()

    def note_forward(self, first_position: int, n_new: int) -> None:
        """Account one forward of ``n_new`` tokens fed at cache positions ``first_position …`` (before the prune)."""
        length = self.length
        self.stats.max_query_position = max(self.stats.max_query_position, first_position + n_new - 1)
        self.stats.max_attention_len = max(self.stats.max_attention_len, length)
        self.stats.kv_len_trace.append((self._calls, length))
        self.stats.bytes_moved += sum(_entry_bytes(layer) for layer in self.layers) * length  # the cat's copy

    def after_forward(self) -> PruneEvent | None:
        """The wrapper's ``update``: prune if the rule says so; returns the event (None when no prune)."""
        seq_len, call = self.length, self._calls
        self._calls += 1
        target = target_length(self.budget, seq_len)
        if target is None:
            return None
        sink = min(self.budget.n_sink, seq_len)
        recent = min(max(0, target - sink), seq_len - sink)
        kept, recent_start = sink + recent, seq_len - recent
        for index, layer in enumerate(self.layers):
            keys = self._copy_kept(self.key_buffers, index, layer.keys, sink, recent_start, kept)
            values = self._copy_kept(self.value_buffers, index, layer.values, sink, recent_start, kept)
            if recent and recent_start != sink:
                self._rotate_in_place(keys[:, :, sink:kept], sink - recent_start)
            layer.keys, layer.values = keys, values
            self.stats.bytes_moved += _entry_bytes(layer) * kept + self._rotated_bytes(keys, recent)
        event = PruneEvent(step=call, seq_len=seq_len, kept=kept, dropped=seq_len - kept)
        self.events.append(event)
        self.stats.prune_events += 1
        return event

    def _copy_kept(self, buffers: list, index: int, source: torch.Tensor, sink: int, recent_start: int, kept: int):
        """The kept entries copied into the layer's buffer (allocated at the first prune); returns the view."""
        b, h, seq_len, d = source.shape
        shape = (b, h, self.budget.cap_total, d)
        buffer = buffers[index]
        if buffer is None or buffer.shape != shape or buffer.dtype != source.dtype or buffer.device != source.device:
            buffer = buffers[index] = torch.empty(shape, dtype=source.dtype, device=source.device)
        view = buffer[:, :, :kept]
        if sink:
            view[:, :, :sink].copy_(source[:, :, :sink])
        if recent_start < seq_len:
            view[:, :, sink:kept].copy_(source[:, :, recent_start:seq_len])
        return view

    def _rotate_in_place(self, keys: torch.Tensor, shift: int) -> None:
        """Rotate the rotary dims of ``keys`` by ``shift`` positions in place (rotate-half layout)."""
        cos, sin = self._shift_cos_sin(shift, keys)
        x1, x2 = keys[..., : self.half], keys[..., self.half : 2 * self.half]
        if self.rotation_in_key_dtype:
            new1 = x1 * cos - x2 * sin
            new2 = x1 * sin + x2 * cos
        else:
            a, b = x1.float(), x2.float()
            new1, new2 = a * cos - b * sin, a * sin + b * cos
        x1.copy_(new1)
        x2.copy_(new2)

    def _shift_cos_sin(self, shift: int, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin of ``shift * inv_freq`` computed in fp32, cached per shift as the wrapper did (until reset)."""
        dtype = keys.dtype if self.rotation_in_key_dtype else torch.float32
        key = (shift, dtype, keys.device)
        if key not in self._cos_sin:
            angle = self.inv_freq.to(device=keys.device, dtype=torch.float32)[: self.half] * float(shift)
            self._cos_sin[key] = (angle.cos().to(dtype), angle.sin().to(dtype))
        return self._cos_sin[key]

    def _rotated_bytes(self, keys: torch.Tensor, recent: int) -> int:
        b, h = keys.shape[:2]
        return b * h * recent * 2 * self.half * keys.element_size()


def _entry_bytes(layer: DynamicLayer) -> int:
    """Bytes of one cached entry of a layer (K and V, all heads, whole batch)."""
    keys, values = layer.keys, layer.values
    b, h = keys.shape[:2]
    return b * h * (keys.shape[-1] * keys.element_size() + values.shape[-1] * values.element_size())
