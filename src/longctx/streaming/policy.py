"""When to prune and what to keep: pure arithmetic over cache lengths, shared by both cache implementations.

After each forward the cache holds ``length`` entries (sinks first, then the rest in cache order).
``target_length`` says whether to prune and to what length (spec: prune when ``len - C_soft >= R``, cut
to ``C_soft``, at most δ per prune but never above ``C_total``; strict = ``R = 1, σ = 0, δ = 0``).
``keep_segments`` lists the kept entries, in their new order, as half-open index ranges.
"""

from __future__ import annotations

from longctx.streaming.config import Budget


def target_length(budget: Budget, length: int) -> int | None:
    """The length to cut back to after a forward, or None when this step does not prune."""
    R = 1 if budget.method == "start_recent" else budget.compress_every
    if R == 0 or length - budget.cap_soft < R:
        return None
    target = budget.cap_soft if budget.max_drop == 0 else max(length - budget.max_drop, budget.cap_soft)
    return min(target, budget.cap_total)


def refresh_offsets(dropped: int, budget: int) -> list[int]:
    """``budget`` evenly spaced offsets into a dropped span of ``dropped`` entries (bin centres, distinct)."""
    return [((2 * i + 1) * dropped) // (2 * budget) for i in range(budget)]


def refresh_indices(budget: Budget, length: int, target: int) -> list[int]:
    """Cache indices of the B entries a prune re-inserts: evenly spaced over the span it drops."""
    S, B = budget.n_sink, budget.refresh_budget
    dropped = length - S - (target - S - B)
    return [S + off for off in refresh_offsets(dropped, B)] if B else []


def keep_segments(budget: Budget, length: int, target: int) -> list[tuple[int, int]]:
    """Kept entries as ``[(start, stop), ...]`` in new cache order: sinks, [refresh,] recent[, refresh]."""
    S = budget.n_sink
    sinks = [(0, S)] if S else []
    tail = [(length - (target - S - budget.refresh_budget), length)]
    refreshed = [(i, i + 1) for i in refresh_indices(budget, length, target)]
    return sinks + (refreshed + tail if budget.refresh_policy == "middle" else tail + refreshed)
