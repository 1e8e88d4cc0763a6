"""Budget arithmetic (auto-cap), the pruning policy's σ/δ/R rules, and the fast cache's per-step cost."""

from __future__ import annotations

import pytest

from longctx.errors import UsageError
from longctx.streaming.config import StreamingEvalConfig, resolve_budget
from longctx.streaming.evaluator import evaluate_stream
from longctx.streaming.policy import keep_segments, refresh_offsets, target_length
from test_streaming_helpers import tiny_model, token_stream


def budget(method="lazy", **knobs):
    return resolve_budget(StreamingEvalConfig(model="m", text_file="t", method=method, max_eval_tokens=100, **knobs))


def test_auto_cap_arithmetic():
    knobs = dict(
        n_sink=32, cache_slack=16, overlap=8, refresh_budget=4, refresh_policy="middle", impl="plain", compress_every=64
    )
    b = budget(cap_total=2048, **knobs)
    assert b.window == 2048 - 32 - 16 - 8 - 4
    assert (b.cap_total, b.cap_soft, b.recent, b.capacity) == (2048, 2032, b.window + 8, 32 + b.window)
    explicit = budget(window=b.window, **knobs)
    assert explicit == b
    assert budget("start_recent", n_sink=32, cap_total=2048).window == 2016


@pytest.mark.parametrize(
    "knobs,message",
    [
        (
            {"n_sink": 4, "cap_total": 16, "cache_slack": 8, "overlap": 4},
            "W = C_total - S - σ - O - B = 16 - 4 - 8 - 4 - 0 = 0",
        ),
        ({"n_sink": 16, "cap_total": 16}, "must be smaller"),
        ({"n_sink": 4}, "exactly one"),
        ({"n_sink": 4, "cap_total": 16, "window": 8}, "exactly one"),
        ({"n_sink": -1, "cap_total": 16}, "--n-sink must be a non-negative"),
        ({"cap_total": 16, "max_drop": -2}, "--max-drop must be a non-negative"),
        ({"cap_total": 16, "refresh_budget": 2}, "refresh-policy"),
        ({"cap_total": 16, "refresh_policy": "middle"}, "refresh-policy"),
        ({"cap_total": 16, "refresh_budget": 2, "refresh_policy": "uniform"}, "--impl plain"),
        ({"cap_total": 16, "impl": "turbo"}, "--impl must be one of"),
        ({"window": 0}, "--window must be at least 1"),
    ],
)
def test_bad_knobs_raise_usage_error(knobs, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        budget(**knobs)


@pytest.mark.parametrize(
    "method,knob", [("start_recent", "cache_slack"), ("recompute", "overlap"), ("recompute", "compress_every")]
)
def test_knobs_of_other_methods_are_refused(method, knob):
    with pytest.raises(UsageError, match="does not apply"):
        budget(method, cap_total=16, **{knob: 3})


def test_lazy_prunes_when_overflow_reaches_R_and_cuts_to_soft_cap():
    b = budget(n_sink=2, cap_total=20, compress_every=4, cache_slack=3)  # C_soft = 17
    assert [target_length(b, n) for n in (18, 19, 20, 21)] == [None, None, None, 17]
    never = budget(n_sink=2, cap_total=20, compress_every=0)
    assert target_length(never, 10_000) is None
    strict = budget("start_recent", n_sink=2, cap_total=20)
    assert (target_length(strict, 20), target_length(strict, 21)) == (None, 20)


def test_max_drop_stages_eviction_but_never_exceeds_cap_total():
    b = budget(n_sink=2, cap_total=20, compress_every=8, cache_slack=4, max_drop=3)  # C_soft = 16
    assert target_length(b, 24) == 20  # max(24 - 3, 16) = 21 > C_total -> 20
    b = budget(n_sink=2, cap_total=30, compress_every=8, cache_slack=14, max_drop=3)  # C_soft = 16
    assert target_length(b, 24) == 21
    assert target_length(b, 23) is None


def test_keep_segments_place_refreshed_tokens():
    middle = budget(n_sink=2, cap_total=20, compress_every=4, refresh_budget=3, refresh_policy="middle", impl="plain")
    segments = keep_segments(middle, 24, 20)  # recent = 20 - 2 - 3 = 15 -> [9, 24); dropped span [2, 9)
    assert segments[0] == (0, 2) and segments[-1] == (9, 24)
    assert [a for a, _ in segments[1:-1]] == [2 + off for off in refresh_offsets(7, 3)] == [3, 5, 7]
    uniform = budget(n_sink=2, cap_total=20, compress_every=4, refresh_budget=3, refresh_policy="uniform", impl="plain")
    assert keep_segments(uniform, 24, 20)[1] == (9, 24)
    assert len(set(refresh_offsets(5, 5))) == 5


def test_fast_cache_maintenance_per_step_does_not_grow_with_C():
    """Issue 7: bytes moved by cache maintenance per decode step is O(S), not O(C)."""
    model = tiny_model("gpt-neox", max_positions=2048)
    per_step = {}
    for C in (64, 1024):
        ids = token_stream(C + 256)
        result = evaluate_stream(model, ids, budget("start_recent", n_sink=4, cap_total=C), "fast")
        assert result.decode_steps == 255
        per_step[C] = result.stats.bytes_moved / result.decode_steps
    assert per_step[1024] <= 2 * per_step[64]
    plain = evaluate_stream(model, token_stream(1024 + 256), budget("start_recent", n_sink=4, cap_total=1024), "plain")
    assert plain.stats.bytes_moved / plain.decode_steps > 20 * per_step[1024]  # the plain cache copies O(C)
