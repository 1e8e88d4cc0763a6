"""The fast streaming cache: one preallocated buffer per layer, O(S + B) work per prune, amortized O(1) rebase.

Layout: entries live in slots of a buffer of ``2 * A`` slots (``A`` = most keys one step attends to).
The recent block occupies slots ``[start, end)`` in text order; the head (the S sinks, then with
``refresh_policy=middle`` the B refreshed entries) sits right before it, in ``[start - H, start)``, so
attention always reads one contiguous view and needs no mask. Every entry's rotation position is
``slot + shift``: the query of a new token at slot ``end`` is fed position ``end + shift``, recent keys
keep the rotation they were computed with (RoPE scores depend only on the query-key distance, and slot
distances equal cache-index distances), and a prune only moves ``start`` forward and rewrites the head
into the slots before it, each head key re-rotated from a stored copy (sinks: their prefill keys;
refreshed entries: their key when they were picked) by one integer offset, never accumulated. That is
the pos-shift definition: sink j sits at ``j + offset`` relative to the recent block, offset = tokens
evicted. ``refresh_policy=uniform`` puts refreshed entries after the recent block, which shifts every
recent key's cache index (O(C) re-rotation per prune): it is left to the plain cache.

Positions start at ``-A`` (the prefill is fed ``-A … P-1-A``; only distances matter). When the buffer
is full (``end`` reaches the last slot, which is exactly when positions would leave ``[-A, A)``), the
live block is moved to the buffer's front and re-rotated by one scalar offset to positions starting at
``-A`` (a rebase): at most every ``A`` steps, so amortized one entry per step, and |position| never
exceeds A, the longest context the definition itself uses. A key is re-rotated at most twice in its
lifetime, each time from its current value by one integer offset (fp32 cos/sin).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longctx.streaming.base import StreamingCache, StreamingLayer
from longctx.streaming.config import Budget
from longctx.streaming.policy import refresh_indices
from longctx.streaming.rope import Rotator


@dataclass
class SlotState:
    """Shared by all layers (they prune in lockstep): head ``[start - n_head, start)``, recent ``[start, end)``."""

    n_sink: int
    n_head: int
    n_slots: int
    max_attention: int
    start: int
    shift: int  # position = slot + shift; -A after every rebase (and at the start): positions stay in [-A, A)
    end: int = 0

    @property
    def lo(self) -> int:
        return self.start - self.n_head


class FastLayer(StreamingLayer):
    """One layer's K/V buffers plus the stored copies its head is rewritten from."""

    def __init__(self, slots: SlotState):
        super().__init__()
        self.slots = slots
        self.sink_keys = self.sink_values = self.refresh_keys = self.refresh_values = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, h, _, d = key_states.shape
        self.keys = key_states.new_empty(b, h, self.slots.n_slots, d)
        self.values = value_states.new_empty(b, h, self.slots.n_slots, value_states.shape[-1])
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        """Write the new entries at ``end`` and return the contiguous live view (head, recent, new)."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        s = self.slots
        stop = s.end + key_states.shape[-2]
        self.keys[:, :, s.end : stop] = key_states
        self.values[:, :, s.end : stop] = value_states
        return self.keys[:, :, s.lo : stop], self.values[:, :, s.lo : stop]

    def get_seq_length(self) -> int:
        return max(self.slots.end - self.slots.lo, 0)

    def entry_bytes(self) -> int:
        """Bytes of one cached entry (K and V, all heads, whole batch)."""
        return self.keys[:, :, :1].numel() * self.keys.element_size() + (
            self.values[:, :, :1].numel() * self.values.element_size()
        )


class FastStreamingCache(StreamingCache):
    """Start+Recent / Lazy Pruning cache with preallocated buffers and O(S + B) per-prune maintenance."""

    def __init__(self, budget: Budget, rotator: Rotator, num_layers: int, n_tokens: int):
        if budget.refresh_policy == "uniform":
            raise ValueError("the fast cache implements refresh_policy 'middle' only (use impl='plain')")
        attention = budget.max_attention_len(n_tokens)
        S = budget.n_sink
        self.slots = SlotState(S, S, n_slots=2 * attention, max_attention=attention, start=S, shift=-attention)
        super().__init__([FastLayer(self.slots) for _ in range(num_layers)], budget)
        self.rotator = rotator
        self.sink_origin = 0  # position of sink 0 in the stored copies
        self.refresh_origin: torch.Tensor | None = None  # positions the refresh copies are rotated at

    def next_position(self, n_new: int = 1) -> int:
        s = self.slots
        if self.layers[0].is_initialized and s.end + n_new > s.n_slots:
            self._rebase()
        first = s.end + s.shift
        self._note_position(first, n_new)
        return first

    def _advance(self, n_new: int) -> None:
        s = self.slots
        if s.end < s.n_sink <= s.end + n_new:  # the sinks just arrived (prefill): keep their copies
            self.sink_origin = s.shift
            for layer in self.layers:
                layer.sink_keys = layer.keys[:, :, : s.n_sink].clone()
                layer.sink_values = layer.values[:, :, : s.n_sink].clone()
        s.end += n_new

    def _prune(self, length: int, target: int) -> None:
        """Drop the span before the kept recent block: move ``start``, rewrite the head before it."""
        s, B = self.slots, self.budget.refresh_budget
        if B:
            self._take_refresh(refresh_indices(self.budget, length, target))
        s.start = s.lo + length - (target - s.n_sink - B)
        s.n_head = s.n_sink + B
        self._write_head()

    def _take_refresh(self, indices: list[int]) -> None:
        """Copy the picked entries (keys as rotated now, and their positions) before their slots are reused."""
        s, device = self.slots, self.layers[0].keys.device
        origins = []
        for c in indices:
            if c < s.n_head:  # a refreshed entry picked again: keep its stored copy
                origins.append(self.refresh_origin[c - s.n_sink : c - s.n_sink + 1])
            else:
                origins.append(torch.arange(s.lo + c + s.shift, s.lo + c + s.shift + 1, device=device))
        for layer in self.layers:
            keys, values = [], []
            for c in indices:
                if c < s.n_head:
                    keys.append(layer.refresh_keys[:, :, c - s.n_sink : c - s.n_sink + 1])
                    values.append(layer.refresh_values[:, :, c - s.n_sink : c - s.n_sink + 1])
                else:
                    keys.append(layer.keys[:, :, s.lo + c : s.lo + c + 1])
                    values.append(layer.values[:, :, s.lo + c : s.lo + c + 1])
            layer.refresh_keys, layer.refresh_values = torch.cat(keys, dim=-2), torch.cat(values, dim=-2)
            self.stats.bytes_moved += len(indices) * layer.entry_bytes()
        self.refresh_origin = torch.cat(origins)

    def _write_head(self) -> None:
        """Sinks, then refreshed entries, into ``[start - H, start)`` at ``slot + shift``: one rotation each."""
        s = self.slots
        lo, mid = s.lo, s.lo + s.n_sink
        for layer in self.layers:
            if s.n_sink:
                layer.keys[:, :, lo:mid] = self.rotator.rotate(layer.sink_keys, lo + s.shift - self.sink_origin)
                layer.values[:, :, lo:mid] = layer.sink_values
            if mid < s.start:
                positions = torch.arange(mid + s.shift, s.start + s.shift, device=layer.keys.device)
                layer.keys[:, :, mid : s.start] = self.rotator.rotate(
                    layer.refresh_keys, positions - self.refresh_origin
                )
                layer.values[:, :, mid : s.start] = layer.refresh_values
            self.stats.bytes_moved += s.n_head * layer.entry_bytes()

    def _rebase(self) -> None:
        """Move the live block to the buffer front at positions from ``-A``: one scalar re-rotation."""
        s = self.slots
        lo, length = s.lo, s.end - s.lo
        new_shift = -s.max_attention
        offset = new_shift - (lo + s.shift)
        for layer in self.layers:
            layer.keys[:, :, :length] = self.rotator.rotate(layer.keys[:, :, lo : s.end], offset)
            layer.values[:, :, :length] = layer.values[:, :, lo : s.end].clone()
            self.stats.bytes_moved += length * layer.entry_bytes()
        s.start, s.end, s.shift = s.n_head, length, new_shift
        self.stats.rebase_events += 1
