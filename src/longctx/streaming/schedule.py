"""The whole prune and rebase schedule of a stream, planned on the host before the compiled decode loop.

The cache's evolution depends only on N, C, S, R, σ, δ (``policy.target_length``), never on the tokens,
so it is computed once here and handed to the fixed-shape decode step as per-step tables. Vocabulary
(the static ring cache's; see ``static_cache``): after feeding ``x_t`` the cache holds the S sinks and
the recent text tokens ``lo … t``; a recent token u is fed at position ``u + shift`` and a sink j sits at
``j + lo - S + shift`` (pos-shift semantics: cache-index distances). ``shift`` starts at ``-A`` (A = the
most keys one step attends to) and a rebase, due when the query position would reach ``A``, lowers it so
that sink 0 sits at ``-A`` again: every position stays in ``[-A, A)`` and rebases are at least A steps apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from longctx.streaming.config import Budget
from longctx.streaming.policy import target_length


@dataclass
class StreamSchedule:
    """Per decode step k (feeding ``x_{P+k}``): the first kept recent token, the position shift, rebases."""

    prefill_len: int
    n_sink: int
    max_attention: int  # A: the fixed number of key slots
    first_shift: int  # the prefill's shift (its tokens are fed at u + first_shift)
    lo: list[int] = field(default_factory=list)
    shift: list[int] = field(default_factory=list)
    rebase_delta: list[int] = field(default_factory=list)  # shift change applied before step k (0: none)
    kv_len_trace: list[tuple[int, int]] = field(default_factory=list)  # (step, length after forward)
    prune_events: int = 0

    @property
    def decode_steps(self) -> int:
        return len(self.lo)

    @property
    def rebase_steps(self) -> list[int]:
        return [k for k, delta in enumerate(self.rebase_delta) if delta]

    @property
    def max_query_position(self) -> int:
        """Largest |position id| fed to the model, prefill included."""
        fed = [abs(self.first_shift), abs(self.prefill_len - 1 + self.first_shift)]
        fed += [abs(self.prefill_len + k + shift) for k, shift in enumerate(self.shift)]
        return max(fed)

    @property
    def max_attention_len(self) -> int:
        return max(length for _, length in self.kv_len_trace)


def plan_schedule(budget: Budget, n_tokens: int) -> StreamSchedule:
    """Simulate the cache lengths of ``start_recent``/``lazy`` over ``n_tokens`` (refresh not supported)."""
    if budget.method == "recompute" or budget.refresh_budget:
        raise ValueError("the static ring cache implements start_recent and lazy without refresh")
    S, A, P = budget.n_sink, budget.max_attention_len(n_tokens), budget.prefill_len(n_tokens)
    plan = StreamSchedule(prefill_len=P, n_sink=S, max_attention=A, first_shift=-A)
    lo, shift = S, -A
    lo = _after_forward(plan, budget, step=0, last_fed=P - 1, lo=lo)
    for k in range(n_tokens - 1 - P):
        t = P + k
        delta = 0
        if t + shift >= A:  # the query would leave [-A, A): put sink 0 back at -A
            delta = (-A - lo + S) - shift
            shift += delta
        plan.lo.append(lo)
        plan.shift.append(shift)
        plan.rebase_delta.append(delta)
        lo = _after_forward(plan, budget, step=k + 1, last_fed=t, lo=lo)
    if plan.max_attention_len > A:
        raise AssertionError(f"schedule attends to {plan.max_attention_len} keys, more than the {A} slots")
    return plan


def _after_forward(plan: StreamSchedule, budget: Budget, step: int, last_fed: int, lo: int) -> int:
    """Record the length after a forward that fed up to ``x_{last_fed}``; return ``lo`` after any prune."""
    S = plan.n_sink
    length = S + last_fed + 1 - lo
    plan.kv_len_trace.append((step, length))
    target = target_length(budget, length)
    if target is None:
        return lo
    plan.prune_events += 1
    return last_fed + 1 - (target - S)
