"""What both cache implementations share: the decode-step protocol and the cache statistics.

Protocol per step: ``pos = cache.next_position()`` (the position id to feed the new token at), one model
forward with ``past_key_values=cache`` (attention calls ``update`` per layer with keys already rotated at
``pos``), then ``cache.finish_step(n_new)`` applies the pruning policy. Implementations differ only in
how they store entries and realise the pos-shift positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers.cache_utils import Cache, CacheLayerMixin

from longctx.streaming.config import Budget
from longctx.streaming.policy import target_length


@dataclass
class CacheStats:
    """Counters of cache maintenance, filled without host syncs (plain Python ints)."""

    prune_events: int = 0
    bytes_moved: int = 0  # bytes written by cache maintenance (copies, re-rotations, reallocations)
    max_attention_len: int = 0  # most keys one forward attended to (cache plus new tokens)
    max_query_position: int = 0  # largest |position id| fed to the model
    rebase_events: int = 0
    kv_len_trace: list[tuple[int, int]] = field(default_factory=list)  # (step, length after forward)


class StreamingLayer(CacheLayerMixin):
    """Common flags of the streaming layers: full attention, not compileable, no preset maximum."""

    is_sliding = False
    is_compileable = False
    is_croppable = False

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def get_max_length(self) -> int:
        return -1


class StreamingCache(Cache):
    """A transformers Cache whose length is bounded by the Start+Recent / Lazy Pruning policy."""

    def __init__(self, layers: list[CacheLayerMixin], budget: Budget):
        super().__init__(layers=layers)
        self.budget = budget
        self.stats = CacheStats()
        self._steps = 0

    @property
    def length(self) -> int:
        return self.layers[0].get_seq_length()

    def next_position(self, n_new: int = 1) -> int:
        """Position id of the first of the next ``n_new`` tokens (the implementation may rebase first)."""
        raise NotImplementedError

    def finish_step(self, n_new: int) -> None:
        """Account the ``n_new`` tokens the forward appended, then prune if the policy says so."""
        self._advance(n_new)
        length = self.length
        self.stats.max_attention_len = max(self.stats.max_attention_len, length)
        self.stats.kv_len_trace.append((self._steps, length))
        self._steps += 1
        target = target_length(self.budget, length)
        if target is not None:
            self.stats.prune_events += 1
            self._prune(length, target)

    def _note_position(self, first: int, n_new: int) -> None:
        self.stats.max_query_position = max(self.stats.max_query_position, abs(first), abs(first + n_new - 1))

    def _advance(self, n_new: int) -> None:
        raise NotImplementedError

    def _prune(self, length: int, target: int) -> None:
        raise NotImplementedError
