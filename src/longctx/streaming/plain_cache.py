"""The plain streaming cache: the original slice-and-concatenate behaviour, kept as the benchmark's reference.

Entries are kept in cache order in growing tensors (``torch.cat`` on every append, as a DynamicCache
does). Every entry's key is stored twice: as the model computed it (rotated at the position it was fed
at) and re-rotated to its current cache index. A prune concatenates the kept slices (sinks, recent
block, refreshed entries) and re-rotates every kept key from its original by ``new index - fed
position``: O(C) work per prune, one rotation from the original, so no error accumulates. Positions fed
to the model are cache indices (pos-shift semantics), so no rebase is ever needed.
"""

from __future__ import annotations

import torch

from longctx.streaming.base import StreamingCache, StreamingLayer
from longctx.streaming.config import Budget
from longctx.streaming.policy import keep_segments
from longctx.streaming.rope import Rotator


class PlainLayer(StreamingLayer):
    """Keys at cache-index positions, the keys as fed, their feed positions, and values."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.keys = key_states[:, :, :0]
        self.values = value_states[:, :, :0]
        self.fed_keys = key_states[:, :, :0]
        self.fed_positions = torch.zeros(0, dtype=torch.long, device=key_states.device)
        self.appended_bytes = 0
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        old = self.get_seq_length()
        n_new = key_states.shape[-2]
        self.keys = torch.cat([self.keys, key_states], dim=-2)
        self.fed_keys = torch.cat([self.fed_keys, key_states], dim=-2)
        self.values = torch.cat([self.values, value_states], dim=-2)
        positions = torch.arange(old, old + n_new, device=key_states.device)
        self.fed_positions = torch.cat([self.fed_positions, positions])
        self.appended_bytes = old * self.entry_bytes()  # the cat copied every old entry
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return 0 if not self.is_initialized else self.keys.shape[-2]

    def entry_bytes(self) -> int:
        """Bytes one entry occupies across keys, keys-as-fed and values."""
        row = self.keys.shape[0] * self.keys.shape[1] * self.keys.element_size()
        return row * (2 * self.keys.shape[-1] + self.values.shape[-1])

    def keep(self, segments: list[tuple[int, int]], rotator: Rotator) -> int:
        """Slice-and-concatenate the kept entries, re-rotate keys to their new indices; returns bytes written."""
        self.fed_keys = torch.cat([self.fed_keys[:, :, a:b] for a, b in segments], dim=-2)
        self.values = torch.cat([self.values[:, :, a:b] for a, b in segments], dim=-2)
        self.fed_positions = torch.cat([self.fed_positions[a:b] for a, b in segments])
        new_index = torch.arange(self.fed_positions.numel(), device=self.fed_positions.device)
        self.keys = rotator.rotate(self.fed_keys, new_index - self.fed_positions)
        return self.get_seq_length() * self.entry_bytes()


class PlainStreamingCache(StreamingCache):
    """Start+Recent / Lazy Pruning (and refresh) by slicing and concatenating on every prune."""

    def __init__(self, budget: Budget, rotator: Rotator, num_layers: int, n_tokens: int):
        super().__init__([PlainLayer() for _ in range(num_layers)], budget)
        self.rotator = rotator

    def next_position(self, n_new: int = 1) -> int:
        first = self.length
        self._note_position(first, n_new)
        return first

    def _advance(self, n_new: int) -> None:
        self.stats.bytes_moved += sum(layer.appended_bytes for layer in self.layers)

    def _prune(self, length: int, target: int) -> None:
        segments = keep_segments(self.budget, length, target)
        self.stats.bytes_moved += sum(layer.keep(segments, self.rotator) for layer in self.layers)
