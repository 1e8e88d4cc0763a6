"""The static ring cache: every tensor keeps one shape for the whole stream, so a decode step is one graph.

Each layer holds K/V buffers of ``A`` slots (A = most keys one step attends to). Slots ``[0, S)`` hold the
sinks; slots ``[S, A)`` are a ring for the recent tokens: text token ``u >= S`` lives in slot
``S + (u - S) mod (A - S)``. A ring slot is reused only after its token was evicted, because a step never
attends to more than ``A - S`` recent tokens (the new one included). ``slot_text[s]`` is the text index slot
s holds (``EMPTY`` when none) and the attention mask is derived from it: a slot is attended when it holds a
sink or a token ``>= lo`` (the first kept recent token), and never a token after the query. A prune is thus
only a new ``lo`` (the schedule's): no entry moves. Recent keys keep the rotation they were fed with; the
sinks are re-rotated every step from their prefill copy by one integer offset (O(S), fixed shape) to sit
right before the recent block, and a rebase rotates the whole ring by one scalar (see ``schedule``).
Writes go to the slot in ``slot`` (a device tensor the step fills), so the model's ``update`` calls are the
same every step. The attention mask is an additive ``[1, 1, 1, A]`` tensor passed to the model as a ready
4-D mask (transformers uses such a mask as is), which eager and SDPA attention both accept.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from longctx.streaming.rope import Rotator

EMPTY = 2**62  # slot_text of an unused slot: "after" every query, so the causal test masks it


def static_address(tensor: torch.Tensor) -> torch.Tensor:
    """Mark a state tensor as having a fixed address (CUDA graphs may then mutate it in place)."""
    torch._dynamo.mark_static_address(tensor)
    return tensor


class RingLayer(CacheLayerMixin):
    """One layer's ``[1, heads, A, dim]`` K/V buffers and its sinks' prefill keys."""

    is_compileable = True
    is_sliding = False

    def __init__(self, n_slots: int, n_sink: int, slot: torch.Tensor):
        super().__init__()
        self.n_slots, self.n_sink, self.slot = n_slots, n_sink, slot
        self.sink_keys: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, h, _, d = key_states.shape
        self.keys = static_address(key_states.new_zeros(b, h, self.n_slots, d))  # zeros: masked slots stay finite
        self.values = static_address(value_states.new_zeros(b, h, self.n_slots, value_states.shape[-1]))
        self.sink_keys = static_address(key_states.new_zeros(b, h, self.n_sink, d))
        self.is_initialized = True

    def load(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Copy the prefill's K/V (text tokens ``0 … P-1``, slots ``0 … P-1``) and keep the sinks' keys."""
        if not self.is_initialized:
            self.lazy_initialization(keys, values)
        n = keys.shape[-2]
        self.keys[:, :, :n].copy_(keys)
        self.values[:, :, :n].copy_(values)
        self.sink_keys.copy_(keys[:, :, : self.n_sink])

    def update(self, key_states, value_states, *args, **kwargs):
        """Write the new token's K/V into ``slot``; attention reads every slot (the mask hides the unused)."""
        self.keys.index_copy_(2, self.slot, key_states)
        self.values.index_copy_(2, self.slot, value_states)
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.n_slots, 0

    def get_seq_length(self) -> int:
        """The slot count (the live length is the schedule's; attention always spans every slot)."""
        return self.n_slots

    def get_max_length(self) -> int:
        return self.n_slots


class RingCache(Cache):
    """A transformers Cache of fixed-shape ring layers plus the slot bookkeeping the decode step updates."""

    def __init__(self, rotator: Rotator, num_layers: int, n_slots: int, n_sink: int, first_shift: int, device):
        self.slot = static_address(torch.zeros(1, dtype=torch.long, device=device))
        super().__init__(layers=[RingLayer(n_slots, n_sink, self.slot) for _ in range(num_layers)])
        self.rotator, self.n_slots, self.n_sink, self.first_shift = rotator, n_slots, n_sink, first_shift
        self.slot_text = static_address(torch.full((n_slots,), EMPTY, dtype=torch.long, device=device))
        self.is_sink = static_address(torch.arange(n_slots, device=device) < n_sink)

    def load_prefill(self, prefill, n_tokens: int) -> None:
        """Start the stream from a prefill's DynamicCache (tokens ``0 … n-1`` fed at ``u + first_shift``)."""
        self.slot_text.fill_(EMPTY)
        self.slot_text[:n_tokens] = torch.arange(n_tokens, device=self.slot_text.device)
        for layer, source in zip(self.layers, prefill.layers, strict=True):
            layer.load(source.keys, source.values)

    def begin_step(self, t: torch.Tensor, lo: torch.Tensor, shift: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Inside the step, before the forward (all ``[1]`` tensors): pick x_t's slot, re-place the sinks,
        and return the additive ``[1, 1, 1, A]`` mask."""
        S, ring = self.n_sink, self.n_slots - self.n_sink
        slot = S + (t - S) % ring
        self.slot.copy_(slot)
        self.slot_text.index_copy_(0, slot, t)
        if S:
            offset = lo - S + shift - self.first_shift  # sink j to j + lo - S + shift
            for layer in self.layers:
                layer.keys[:, :, :S] = self.rotator.rotate(layer.sink_keys, offset)
        attended = (self.slot_text <= t) & ((self.slot_text >= lo) | self.is_sink)
        zero = torch.zeros((), dtype=dtype, device=attended.device)
        return torch.where(attended, zero, torch.finfo(dtype).min).view(1, 1, 1, -1)

    def rotate_ring(self, delta: torch.Tensor) -> None:
        """A rebase: every ring key moves by ``delta`` positions (one rotation, fp32 cos/sin)."""
        S = self.n_sink
        for layer in self.layers:
            layer.keys[:, :, S:] = self.rotator.rotate(layer.keys[:, :, S:], delta)
