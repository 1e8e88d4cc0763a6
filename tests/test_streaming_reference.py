"""The reference protocol against the original code (fixtures), a slow rendering of its algorithm, and the
efficient protocol: per-token NLL, prune positions, kept entries, positions fed and the tokens scored.

The fixtures (tests/fixtures/original_streaming) are the per-token NLL the ORIGINAL wrapper and decode loop
(3cb8e4b) produced on a tiny GPT-NeoX; the slow rendering below restates the original's algorithm from its
code's rules (a list of text indices in cache order, the wrapper's prune rule, the loop's feeding order) and
scores it with a cache that rotates every un-rotated key to its cache index in float64 at every step.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from longctx.streaming.config import StreamingEvalConfig, resolve_budget
from longctx.streaming.evaluator import evaluate_stream
from longctx.streaming.reference_cache import ReferenceCache
from longctx.streaming.reference_loop import Quirks, evaluate_reference, prefill_length
from test_streaming_helpers import ReferenceCache as SlowCache
from test_streaming_helpers import tiny_model, token_stream

FIXTURES = Path(__file__).parent / "fixtures" / "original_streaming"
TOL = 1e-5
REFERENCE = Quirks()
ALL_OFF = Quirks(prefill_cap_total=False, refeed_last_prefill_token=False, rotation_in_key_dtype=False, loss="fp32")


def budget_of(method: str, n: int, protocol: str = "reference", **knobs):
    cfg = StreamingEvalConfig(model="m", text_file="t", method=method, max_eval_tokens=n, protocol=protocol, **knobs)
    return resolve_budget(cfg)


@pytest.fixture(scope="module")
def fixture():
    return json.loads((FIXTURES / "original_streaming.json").read_text())


@pytest.fixture(scope="module")
def fixture_model(fixture):
    info = fixture["model"]
    model = GPTNeoXForCausalLM(GPTNeoXConfig(**info["config"])).eval()
    renames = info["renames_for_config"]
    state = {renames.get(k, k): v for k, v in load_file(FIXTURES / info["weights"]).items()}
    model.load_state_dict(state, strict=False)
    return model


def fixture_knobs(run: dict) -> dict:
    knobs = {"method": run["method"], "n_sink": run.get("n_sink", 0)}
    if run["method"] == "recompute":
        return {**knobs, "cap_total": run["cap_total"]}
    knobs["window"] = run["window"]
    if run["method"] == "lazy":
        knobs.update({k: run[k] for k in ("compress_every", "cache_slack", "max_drop")})
    return knobs


class Recorder:
    """Positions fed to the rotary embedding and the cache object of every forward (hooks, nothing patched)."""

    def __init__(self, model):
        self.positions: list[list[int]] = []
        self.caches: list = []
        rotary = model.base_model.rotary_emb
        self.handles = [
            rotary.register_forward_hook(self._on_rotary, with_kwargs=True),
            model.register_forward_pre_hook(self._on_model, with_kwargs=True),
        ]

    def _on_rotary(self, module, args, kwargs, output):
        self.positions.append(kwargs["position_ids"][0].tolist())

    def _on_model(self, module, args, kwargs):
        self.caches.append(kwargs.get("past_key_values"))

    def close(self):
        for handle in self.handles:
            handle.remove()


def run_recorded(model, ids, budget, quirks=REFERENCE):
    recorder = Recorder(model)
    try:
        run = evaluate_reference(model, ids, budget, quirks)
    finally:
        recorder.close()
    return run, recorder


# --------------------------------------------------------------------------------- the original's own numbers


def test_reference_reproduces_the_original_code_token_for_token(fixture, fixture_model):
    ids = torch.tensor(fixture["token_ids"])
    for run in fixture["runs"]:
        budget = budget_of(n=ids.numel(), **fixture_knobs(run))
        result, recorder = run_recorded(fixture_model, ids, budget)
        expected = torch.tensor(run["nll"], dtype=torch.float64)
        assert (result.nll.double() - expected).abs().max().item() < TOL, run["id"]
        assert math.isclose(result.ppl, run["ppl"], rel_tol=1e-6), run["id"]
        assert result.decode_steps == run["decode_tokens"] == ids.numel() - run["cap_total"]
        if run["updates"] is not None:
            lengths = [length for _, length in result.stats.kv_len_trace]
            assert lengths == [u["len_before"] for u in run["updates"]], run["id"]
            events = recorder.caches[0].events
            original = [u["prune"] for u in run["updates"] if u["prune"]]
            assert [(e.step, e.seq_len, e.kept, e.dropped) for e in events] == [
                (p["step"], p["seq_len"], p["kept"], p["dropped"]) for p in original
            ], run["id"]


# --------------------------------------------------------------------------------- a slow rendering of the original


def original_keep(length: int, S: int, soft: int, hard: int, R: int, delta: int) -> list[int] | None:
    """Cache indices the 3cb8e4b wrapper keeps after a forward (None: no prune), from its code's rules."""
    overflow = length - soft
    if R == 0 or overflow <= 0 or overflow < R:
        return None
    target = min(max(length - delta, soft), hard) if delta > 0 else soft
    sink = min(S, length)
    recent = min(max(0, target - sink), length - sink)
    return list(range(sink)) + list(range(length - recent, length))


def slow_original(model, ids: torch.Tensor, *, S, soft, hard, R, delta):
    """The original loop, literally: prefill C_total tokens, score x_1..x_{P-1}, then feed x_{P-1}, x_P, ...

    Returns per-token NLL (float64, token i at index i-1), the positions fed per forward, the prune events
    (length, kept text indices) and the cache length after every forward."""
    n = ids.numel()
    P = min(max(2, min(hard, n)), n)
    cache, text = SlowCache(model), list(range(P))
    nll = [math.nan] * (n - 1)
    positions, prunes, lengths = [list(range(P))], [], []

    def prune():
        lengths.append(len(text))
        keep = original_keep(len(text), S, soft, hard, R, delta)
        if keep is not None:
            prunes.append((len(text), [text[i] for i in keep]))
            text[:] = [text[i] for i in keep]
            cache.keep(keep)

    with torch.no_grad():
        logits = model(input_ids=ids[None, :P], past_key_values=cache).logits[0].double()
        logprobs = torch.log_softmax(logits, -1)
        for i in range(1, P):
            nll[i - 1] = -logprobs[i - 1, ids[i]].item()
        prune()
        for pos in range(P - 1, n - 1):
            cache.query_position = len(text)
            positions.append([len(text)])
            out = model(
                input_ids=ids[None, pos : pos + 1], position_ids=torch.tensor([[len(text)]]), past_key_values=cache
            )
            text.append(pos)
            nll[pos] = -torch.log_softmax(out.logits[0, -1].double(), -1)[ids[pos + 1]].item()
            prune()
    return torch.tensor(nll, dtype=torch.float64), positions, prunes, lengths


SLOW_CASES = [
    dict(method="start_recent", n_sink=3, cap_total=16),
    dict(method="start_recent", n_sink=0, cap_total=12),
    dict(method="lazy", n_sink=2, cap_total=16, compress_every=5),
    dict(method="lazy", n_sink=2, cap_total=18, compress_every=4, cache_slack=3),
    dict(method="lazy", n_sink=2, cap_total=18, compress_every=4, cache_slack=6),  # σ > R: pruned after the prefill
    dict(method="lazy", n_sink=4, cap_total=18, compress_every=6, cache_slack=4, max_drop=3),
    dict(method="lazy", n_sink=4, cap_total=16, compress_every=6, max_drop=3),  # δ without σ: a no-op
]


@pytest.fixture(scope="module")
def neox():
    return tiny_model("gpt-neox")


@pytest.mark.parametrize("case", SLOW_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_reference_equals_the_slow_rendering_of_the_original(neox, case):
    ids = token_stream(100)
    budget = budget_of(n=100, **case)
    R = 1 if case["method"] == "start_recent" else budget.compress_every
    expected, positions, prunes, lengths = slow_original(
        neox, ids, S=budget.n_sink, soft=budget.cap_soft, hard=budget.cap_total, R=R, delta=budget.max_drop
    )
    result, recorder = run_recorded(neox, ids, budget)
    assert result.nll.numel() == 99 and not torch.isnan(expected).any()  # every x_1..x_{N-1} scored once
    assert (result.nll.double() - expected).abs().max().item() < TOL
    assert recorder.positions == positions  # the prefill 0..P-1, then the cache length before each step
    assert [length for _, length in result.stats.kv_len_trace] == lengths
    events = recorder.caches[0].events
    assert [(e.seq_len, e.kept) for e in events] == [(length, len(kept)) for length, kept in prunes]
    assert result.decode_steps == 100 - budget.cap_total


def _store_text_indices(cache: ReferenceCache, first: int, n: int, dim: int = 4) -> None:
    """Append ``n`` entries to every layer whose values hold their text index (keys: random)."""
    gen = torch.Generator().manual_seed(first)
    for layer in cache.layers:
        values = torch.arange(first, first + n, dtype=torch.float32).view(1, 1, n, 1).expand(1, 2, n, dim)
        layer.update(torch.randn(1, 2, n, dim, generator=gen), values.clone())


def test_prune_keeps_the_sinks_and_the_recent_block_in_a_buffer_allocated_once(neox):
    budget = budget_of("lazy", 100, n_sink=2, cap_total=10, compress_every=3)
    cache = ReferenceCache(neox, budget)
    _store_text_indices(cache, 0, 10)
    assert cache.after_forward() is None and cache.key_buffers[0] is None  # no prune: no buffer yet
    for t in range(10, 12):
        _store_text_indices(cache, t, 1)
        assert cache.after_forward() is None
    _store_text_indices(cache, 12, 1)
    assert cache.after_forward().kept == 10
    buffer = cache.key_buffers[0]
    assert buffer.shape == (1, 2, budget.cap_total, 4)
    kept = cache.layers[0].values[0, 0, :, 0].tolist()
    assert kept == [0, 1, 5, 6, 7, 8, 9, 10, 11, 12]
    assert cache.layers[0].keys.data_ptr() == buffer.data_ptr()  # a view of the buffer
    for t in range(13, 16):
        _store_text_indices(cache, t, 1)
        cache.after_forward()
    assert cache.key_buffers[0] is buffer and cache.layers[0].values[0, 0, :, 0].tolist() == [0, 1, *range(8, 16)]


def test_rotation_accumulates_on_non_sink_keys_in_the_key_dtype(neox):
    budget = budget_of("start_recent", 100, n_sink=2, cap_total=6)
    inv_freq, half = neox.base_model.rotary_emb.inv_freq, neox.base_model.rotary_emb.inv_freq.numel()
    for dtype in (torch.float32, torch.float16):
        cache = ReferenceCache(neox, budget)
        gen = torch.Generator().manual_seed(3)
        keys = torch.randn(1, 1, 7, 8, generator=gen).to(dtype)
        for layer in cache.layers:
            layer.update(keys.clone(), keys.clone())
        cache.after_forward()  # drops entry 2: every kept non-sink key rotated by -1
        stored = cache.layers[0].keys
        assert torch.equal(stored[:, :, :2], keys[:, :, :2])  # sinks untouched
        cos, sin = (inv_freq * -1.0).cos().to(dtype), (inv_freq * -1.0).sin().to(dtype)
        x1, x2 = keys[:, :, 3:, :half], keys[:, :, 3:, half : 2 * half]
        assert torch.equal(stored[:, :, 2:, :half], x1 * cos - x2 * sin)  # fp16 arithmetic, fp16 cos/sin
        assert torch.equal(stored[:, :, 2:, half : 2 * half], x1 * sin + x2 * cos)
        assert torch.equal(stored[:, :, 2:, 2 * half :], keys[:, :, 3:, 2 * half :])  # non-rotary dims untouched
        assert torch.equal(cache.layers[0].values[:, :, 2:], keys[:, :, 3:])


def test_fp16_rotation_drifts_only_with_the_quirk(neox):
    """Strict pruning re-rotates a surviving key once per step: in fp16 the error grows, in fp32 it does not."""
    budget = budget_of("start_recent", 400, n_sink=1, cap_total=300)
    errors = {}
    for in_key_dtype in (True, False):
        cache = ReferenceCache(neox, budget, rotation_in_key_dtype=in_key_dtype)
        keys = torch.randn(1, 1, 300, 8, generator=torch.Generator().manual_seed(4)).half()
        for layer in cache.layers:
            layer.update(keys.clone(), keys.clone())
        for _ in range(250):  # 250 prunes: entry 299 moves to index 49, rotated 250 times by -1
            for layer in cache.layers:
                layer.update(keys[:, :, :1].clone(), keys[:, :, :1].clone())
            cache.after_forward()
        exact = _rotate64(keys[:, :, 299].double(), neox, -250.0)
        errors[in_key_dtype] = (cache.layers[0].keys[:, :, 49].double() - exact).abs().max().item()
    assert errors[True] > 20 * errors[False] and errors[False] < 5e-3


def _rotate64(key: torch.Tensor, model, shift: float) -> torch.Tensor:
    inv = model.base_model.rotary_emb.inv_freq.double()
    half = inv.numel()
    cos, sin = (inv * shift).cos(), (inv * shift).sin()
    x1, x2 = key[..., :half], key[..., half : 2 * half]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos, key[..., 2 * half :]], -1)


# --------------------------------------------------------------------------------- reference vs efficient


QUIRK_CASES = [
    dict(method="recompute", cap_total=16),
    dict(method="start_recent", n_sink=2, cap_total=16),
    dict(method="lazy", n_sink=2, cap_total=16, compress_every=5),
    dict(method="lazy", n_sink=2, cap_total=18, compress_every=4, cache_slack=6, max_drop=3),
]


@pytest.mark.parametrize("case", QUIRK_CASES, ids=lambda c: c["method"] + str(c.get("cache_slack", "")))
def test_with_every_quirk_off_reference_is_the_definition(neox, case):
    ids = token_stream(90)
    reference = evaluate_reference(neox, ids, budget_of(n=90, **case), ALL_OFF)
    for impl in ("fast", "plain"):
        efficient = evaluate_stream(neox, ids, budget_of(n=90, protocol="efficient", **case), impl)
        assert (reference.nll - efficient.nll).abs().max().item() < TOL
        assert reference.decode_steps == efficient.decode_steps
        if case["method"] != "recompute":
            assert reference.stats.kv_len_trace == efficient.stats.kv_len_trace


def test_refed_token_changes_only_the_tokens_scored_while_it_or_its_trace_is_cached(neox):
    """Strict, S=2, C=16 (W=14): x_{P-1} enters twice at step 0 and leaves after W steps; entries computed
    while it was cached leave W steps later. Before P and from P + 2W + 2 on, nothing differs."""
    ids, P, W = token_stream(120), 16, 14
    budget = budget_of("start_recent", 120, n_sink=2, cap_total=16)
    efficient = evaluate_stream(neox, ids, budget_of("start_recent", 120, "efficient", n_sink=2, cap_total=16))
    refed = evaluate_reference(neox, ids, budget, Quirks(prefill_cap_total=False, rotation_in_key_dtype=False,
                                                          loss="fp32"))  # fmt: skip
    reference = evaluate_reference(neox, ids, budget)
    assert torch.equal(refed.nll, reference.nll)  # in fp32 the rotation and loss quirks change nothing
    diff = (reference.nll - efficient.nll).abs()  # diff[i] is token i + 1
    assert diff[: P - 1].max().item() < TOL
    assert diff[P - 1 : P + 2 * W].max().item() > 1e-3
    assert diff[P + 2 * W + 1 :].max().item() < TOL
    assert reference.decode_steps == efficient.decode_steps + 1  # x_{P-1} is decoded again


def test_prefill_of_c_total_acts_only_when_slack_exceeds_R(neox):
    """With σ <= R the C_total-token prefill prunes when the definition does (values equal); with σ > R the
    first prune cuts more entries, and every later token differs."""
    ids = token_stream(90)
    quirk = Quirks(refeed_last_prefill_token=False, rotation_in_key_dtype=False, loss="fp32")
    for sigma, acts in ((3, False), (4, False), (6, True)):
        case = dict(method="lazy", n_sink=2, cap_total=18, compress_every=4, cache_slack=sigma)
        efficient = evaluate_stream(neox, ids, budget_of(n=90, protocol="efficient", **case))
        reference = evaluate_reference(neox, ids, budget_of(n=90, **case), quirk)
        assert ((reference.nll - efficient.nll).abs().max().item() > 1e-3) == acts, sigma


def test_reference_budget_arithmetic():
    budget = budget_of("lazy", 100, n_sink=2, cap_total=18, compress_every=4, cache_slack=6)
    assert prefill_length(budget, 100, Quirks()) == 18
    assert prefill_length(budget, 100, ALL_OFF) == budget.capacity == 12
    assert prefill_length(budget, 10, Quirks()) == 10
    with pytest.raises(ValueError, match="loss must be one of"):
        Quirks(loss="fp64")


def test_recompute_reference_scores_full_windows_of_c_total(neox):
    ids, C = token_stream(60), 16
    result = evaluate_reference(neox, ids, budget_of("recompute", 60, cap_total=C))
    expected = []
    with torch.no_grad():
        prefill = torch.log_softmax(neox(input_ids=ids[None, :C]).logits[0].double(), -1)
        expected += [-prefill[i - 1, ids[i]].item() for i in range(1, C)]
        for pos in range(C - 1, 59):
            window = ids[max(0, pos + 1 - C) : pos + 1]
            expected.append(-torch.log_softmax(neox(input_ids=window[None]).logits[0, -1].double(), -1)[ids[pos + 1]])
    assert (result.nll.double() - torch.tensor(expected, dtype=torch.float64)).abs().max().item() < TOL
    assert result.decode_steps == 60 - C and result.stats.max_attention_len == C
