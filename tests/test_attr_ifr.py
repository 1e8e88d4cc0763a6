"""IFR and FlashTrace (efficient protocol) against slow references built from Hugging Face's own eager attention
probabilities, chunking invariance, the span/IFR identity and linear memory (exact tensor accounting)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3Config

from longctx.architectures import make_config
from longctx.attribution.inputs import AttributionInputs, build_inputs
from longctx.attribution.method import method_spec
from longctx.attribution.methods.flashtrace import (
    FlashTraceOptions,
    flashtrace,
    layer_span_scores,
    span_aggregate,
    span_ifr,
)
from longctx.attribution.spans import SpanPlan, is_stop_token
from longctx.attribution.tracing import decoder_layers, trace_layers
from longctx.measure.tensor_memory import TensorMemoryTracker

MODELS = ("tiny-qwen3", "tiny-gpt-neox", "qwen3-with-biases")
PROMPT = "VAR ABCDE = 12345. The grass is green, the sky is blue. VAR FGHIJ = VAR ABCDE."
TARGET = " The answer is 42. So, ABCDE."


def _qwen3_with_biases():
    """Tiny Qwen3 with q/k/v/o biases (random, nonzero): exercises where V and output biases go."""
    torch.manual_seed(0)
    config = make_config("tiny-qwen3", attention_bias=True, attn_implementation="eager")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    for _, attn in decoder_layers(model):
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj):
            torch.nn.init.normal_(proj.bias, std=0.5)
    return model


@pytest.fixture(scope="module", params=MODELS)
def loaded(request, tiny_dir):
    path = tiny_dir / ("tiny-qwen3" if request.param == "qwen3-with-biases" else request.param)
    if request.param == "qwen3-with-biases":
        model = _qwen3_with_biases()
    else:
        model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", dtype=torch.float32)
    model.eval().requires_grad_(False)
    tok = AutoTokenizer.from_pretrained(path)
    return request.param, model, tok, build_inputs(tok, PROMPT, TARGET)


def _reference_layers(model, input_ids):
    """Per layer: x, HF attention probs A [H,T,T], per-head W_O v [H,T,d], b_O, y = x + attn_out (slow, loops)."""
    records, handles = [], []

    def keep_input(rec, key):
        return lambda _m, args, kwargs: rec.update({key: (args[0] if args else kwargs["hidden_states"])[0]})

    for layer, attn in decoder_layers(model):
        rec = {}
        records.append(rec)
        handles.append(layer.register_forward_pre_hook(keep_input(rec, "x"), with_kwargs=True))
        handles.append(attn.register_forward_pre_hook(keep_input(rec, "h"), with_kwargs=True))
        handles.append(attn.register_forward_hook(lambda _m, _a, out, rec=rec: rec.update(o=out[0][0], A=out[1][0])))
    with torch.no_grad():
        model(input_ids=input_ids, output_attentions=True)
    for h in handles:
        h.remove()
    out = []
    for (_, attn), rec in zip(decoder_layers(model), records, strict=True):
        n_heads = rec["A"].shape[0]
        if hasattr(attn, "v_proj"):
            dh, proj = attn.head_dim, attn.o_proj
            v = attn.v_proj(rec["h"]).view(rec["h"].shape[0], -1, dh)
        else:
            dh, proj = attn.head_size, attn.dense
            v = attn.query_key_value(rec["h"]).view(rec["h"].shape[0], n_heads, 3 * dh)[..., 2 * dh :]
        groups = n_heads // v.shape[1]
        w = proj.weight.view(proj.weight.shape[0], n_heads, dh)
        u = torch.stack([v[:, h // groups] @ w[:, h].T for h in range(n_heads)])  # [H, T, d]
        b = torch.zeros(w.shape[0]) if proj.bias is None else proj.bias
        out.append({"x": rec["x"], "A": rec["A"], "u": u, "b": b, "y": rec["x"] + rec["o"]})
    return out


def _reference_ifr(layers, sink: int) -> torch.Tensor:
    """IFR for one sink by explicit loops over sources and heads: one proximity per (source, head) term."""
    total = torch.zeros(layers[0]["x"].shape[0])
    for lay in layers:
        y, r = lay["y"][sink], lay["x"][sink] + lay["b"]
        prox = torch.zeros(sink + 1)
        for j in range(sink + 1):
            for h in range(lay["A"].shape[0]):
                c = lay["A"][h, sink, j] * lay["u"][h, j]
                prox[j] += max(0.0, float(y.abs().sum() - (y - c).abs().sum()))
        res = max(0.0, float(y.abs().sum() - (y - r).abs().sum()))
        total[: sink + 1] += prox / (prox.sum() + res)
    return total


def _all_positions(model, tok, inputs, sink_chunk=32, src_chunk=128):
    spec = method_spec("ifr_all_positions")
    options = spec.make_options(dict(sink_chunk_tokens=sink_chunk, chunk_tokens=src_chunk))
    return spec.run(model, tok, inputs, options).matrix


def test_decomposition_sums_to_post_attention_residual(loaded):
    """Every (source, head) term plus the residual reproduces y at every layer and position, and the
    attention rows recomputed from hooked post-RoPE q/k equal Hugging Face's eager probabilities."""
    _, model, _, inputs = loaded
    ref = _reference_layers(model, inputs.input_ids)
    checked = []

    def on_layer(index, cap):
        sinks = torch.arange(inputs.total)
        attn = cap.attention_rows(sinks)
        torch.testing.assert_close(attn, ref[index]["A"], atol=1e-5, rtol=1e-4)
        total = torch.einsum("hst,hte->se", attn, cap.value_out(0, inputs.total)) + cap.residual(sinks)
        torch.testing.assert_close(total, cap.y, atol=1e-5, rtol=1e-4)
        per_term = sum(ref[index]["A"][h, :, :, None] * ref[index]["u"][h][None] for h in range(attn.shape[0]))
        torch.testing.assert_close(
            per_term.sum(1) + ref[index]["x"] + ref[index]["b"], ref[index]["y"], atol=1e-5, rtol=1e-4
        )
        checked.append(index)

    trace_layers(model, inputs.input_ids, on_layer)
    assert checked == list(range(len(ref)))


def test_ifr_all_positions_matches_loop_reference(loaded):
    """Row g is the IFR of the output token's own position; 0 (not NaN) at later outputs."""
    _, model, tok, inputs = loaded
    matrix = _all_positions(model, tok, inputs, sink_chunk=3, src_chunk=4)
    assert matrix.shape == (inputs.n_gen, inputs.n_user + inputs.n_gen)
    ref = _reference_layers(model, inputs.input_ids)
    cols = inputs.column_positions()
    for g in (0, inputs.n_gen // 2, inputs.n_gen - 1):
        expected = _reference_ifr(ref, inputs.prompt_len + g)[cols]
        torch.testing.assert_close(matrix[g], expected, atol=1e-5, rtol=1e-4)
        assert (matrix[g, inputs.n_user + g + 1 :] == 0).all() and matrix[g, inputs.n_user + g] > 0
    assert not torch.isnan(matrix).any() and (matrix >= 0).all()


@pytest.mark.parametrize("sink_chunk,src_chunk", [(1, 1), (2, 7), (1000, 1000)])
def test_chunked_sinks_equal_unchunked(loaded, sink_chunk, src_chunk):
    _, model, tok, inputs = loaded
    torch.testing.assert_close(
        _all_positions(model, tok, inputs, sink_chunk, src_chunk),
        _all_positions(model, tok, inputs, inputs.total, inputs.total),
        atol=1e-6,
        rtol=1e-5,
    )


def test_one_token_span_equals_ifr_row(loaded):
    """FlashTrace's span IFR of a single sink is IFR at that position."""
    _, model, tok, inputs = loaded
    matrix = _all_positions(model, tok, inputs, 4, 4)
    cols = inputs.column_positions()
    for g in (0, inputs.n_gen - 2):
        sink = torch.tensor([inputs.prompt_len + g])
        span = span_ifr(model, inputs.input_ids, sink, torch.tensor([1.0]), 4, 4)
        torch.testing.assert_close(span[cols], matrix[g], atol=1e-6, rtol=1e-5)


def test_span_aggregate_equals_the_sum_it_stands_for(loaded):
    """a = sum_i w_i A_i (HF probabilities) and sum_j c_j + r = sum_i w_i y_i at every layer; chunking is exact."""
    _, model, _, inputs = loaded
    ref = _reference_layers(model, inputs.input_ids)
    sinks = torch.arange(inputs.prompt_len - 1, inputs.total - 1)
    weights = torch.rand(len(sinks), generator=torch.Generator().manual_seed(0))
    weights /= weights.sum()

    def on_layer(index, cap):
        agg, y, r = span_aggregate(cap, sinks, weights, sink_chunk=3)
        expected = torch.einsum("hst,s->ht", ref[index]["A"][:, sinks, : agg.shape[1]], weights)
        torch.testing.assert_close(agg, expected, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(
            torch.einsum("ht,hte->e", agg, cap.value_out(0, agg.shape[1])) + r, y, atol=1e-5, rtol=1e-4
        )
        torch.testing.assert_close(weights @ ref[index]["y"][sinks], y, atol=1e-5, rtol=1e-4)
        chunked = layer_span_scores(cap, sinks, weights, 2, 5)
        torch.testing.assert_close(chunked, layer_span_scores(cap, sinks, weights, 1000, 1000), atol=1e-6, rtol=1e-5)

    trace_layers(model, inputs.input_ids, on_layer)


def test_multi_hop_is_base_plus_ratio_weighted_hops(loaded):
    """The module docstring's recursion written out with plain span IFR calls (2 hops, stop tokens zeroed)."""
    _, model, _, inputs = loaded
    start, end = inputs.prompt_len, inputs.total - 1
    keep = torch.ones(inputs.total)
    keep[start + 2] = 0.0
    plan = SpanPlan(start, end, None, keep, torch.ones(inputs.n_gen, dtype=torch.bool))
    options = FlashTraceOptions(n_hops=2, sink_chunk_tokens=4, chunk_tokens=4)
    result, ratios = flashtrace(model, inputs, plan, options)
    sinks, span = torch.arange(start, end), slice(start, end)
    m = (torch.arange(inputs.total) < start).float() * keep
    e = span_ifr(model, inputs.input_ids, sinks, torch.ones(len(sinks)), 4, 4) * keep
    expected, ratio = e * m, float(e[span].sum() / e.sum())
    assert ratios[0] == pytest.approx(ratio, rel=1e-6)
    for hop in range(2):
        e = span_ifr(model, inputs.input_ids, sinks, e[span] / e[span].sum(), 4, 4) * keep
        torch.testing.assert_close(result.hops[hop + 1], e, atol=1e-6, rtol=1e-5)
        expected += ratio * e * m
        ratio *= float(e[span].sum() / e.sum())
        assert ratios[hop + 1] == pytest.approx(ratio, rel=1e-5)
    torch.testing.assert_close(result.scores, expected, atol=1e-6, rtol=1e-5)
    assert 0 < ratios[0] < 1 and (result.scores[start:] == 0).all()


def test_flashtrace_methods_rows_and_stop_tokens(loaded):
    _, model, tok, inputs = loaded
    options = FlashTraceOptions(sink_chunk_tokens=4, chunk_tokens=8)
    hop = method_spec("ifr_multi_hop").run(model, tok, inputs, options)
    assert hop.matrix is None and hop.span.scores.shape == (inputs.total,)
    matrix = hop.as_matrix(inputs)
    assert matrix.shape == (inputs.n_gen, inputs.n_user + inputs.n_gen) and not torch.isnan(matrix).any()
    assert (matrix == matrix[0]).all() and (matrix[:, inputs.n_user :] == 0).all() and (matrix[0] > 0).any()
    assert hop.details["sink_span_absolute"] == [inputs.prompt_len, inputs.total - 1]
    both = method_spec("ifr_multi_hop_both").run(model, tok, inputs, options)
    user_tokens, gen_tokens = inputs.token_strings(tok)
    stop_rows = torch.tensor([is_stop_token(t) for t in gen_tokens[:-1]] + [True])
    matrix = both.as_matrix(inputs)
    assert stop_rows.any() and torch.equal(torch.isnan(matrix).all(1), stop_rows)
    row = matrix[~stop_rows][0]
    user_stop = torch.tensor([is_stop_token(t) for t in user_tokens])
    assert user_stop.any() and (row[: inputs.n_user][user_stop] == 0).all() and (row[: inputs.n_user] > 0).any()
    assert both.details["sink_span_absolute"] == [inputs.prompt_len, inputs.total - 2]


def _hidden64_model():
    """A Qwen3-style model with hidden size 64, where any (span x sequence) term would dominate memory."""
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=1024,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=128,
        max_position_embeddings=8192,
    )
    return AutoModelForCausalLM.from_config(config).eval().requires_grad_(False)


def _peaks(model, tok, name: str, lengths: tuple[int, ...]) -> dict[int, int]:
    """Exact peak tensor bytes above entry of one method call per output length (prompt of 10 tokens)."""
    spec = method_spec(name)
    options = spec.make_options(dict(chunk_tokens=128, sink_chunk_tokens=32))
    words = tok(" The answer is 42, said the man.", add_special_tokens=False)["input_ids"]
    peaks = {}
    for g in lengths:
        ids = torch.tensor([(words * (10 + g))[: 10 + g] + [tok.eos_token_id]])
        inputs = AttributionInputs(ids, 10, (0, 10), ids[0, 10:].tolist(), True, False)
        with TensorMemoryTracker(baseline=model) as mem:
            result = spec.run(model, tok, inputs, options)
        result_bytes = 0 if result.matrix is None else result.matrix.nbytes
        peaks[g] = mem.stats().total.peak_above_entry_bytes - result_bytes
    return peaks


@pytest.mark.parametrize("name", ["ifr_multi_hop", "ifr_multi_hop_both"])
def test_span_methods_peak_memory_is_linear_in_the_output_length(tiny_dir, name):
    """Issue #13: above the 256-token level the exact peak grows ~5x from 1,024 to 4,096 output tokens
    ((4096 - 256) / (1024 - 256) for a linear term), not ~21x as a (span x sequence) term would make it.
    The result is one vector per hop; nothing of size G x T is formed."""
    peaks = _peaks(_hidden64_model(), AutoTokenizer.from_pretrained(tiny_dir / "tiny-qwen3"), name, (256, 1024, 4096))
    growth = (peaks[4096] - peaks[256]) / (peaks[1024] - peaks[256])
    assert 4 < growth < 6.5, peaks


def test_ifr_all_positions_memory_besides_its_result_is_linear(tiny_dir):
    """The [G, n_user + G] result is quadratic by definition; the rest of the peak grows like the sequence."""
    peaks = _peaks(_hidden64_model(), AutoTokenizer.from_pretrained(tiny_dir / "tiny-qwen3"), "ifr_all_positions",
                   (128, 512, 2048))  # fmt: skip
    growth = (peaks[2048] - peaks[128]) / (peaks[512] - peaks[128])
    assert 4 < growth < 6.5, peaks


@pytest.mark.parametrize("block_elements", [1, 1 << 25])
def test_head_proximity_sum_is_exact_per_head_and_free_of_cancellation(monkeypatch, block_elements):
    """Per (source, head) proximities summed over heads, heads grouped or not, equal to a float64 evaluation
    even for contributions a million times smaller than the residual (where ||y|| - ||y - c|| in fp32 is noise)."""
    from longctx.attribution import routes

    monkeypatch.setattr(routes, "BLOCK_ELEMENTS", block_elements)
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(3, 64, generator=gen) * 100
    weights = torch.rand(4, 3, 5, generator=gen) * torch.tensor([1.0, 1e-6, 1e-3, 1.0, 0.5])[None, None]
    values = torch.randn(4, 5, 64, generator=gen)
    contrib = (weights[..., None] * values[:, None]).double()
    y64 = y.double()[None, :, None]
    expected = (y64.abs().sum(-1) - (y64 - contrib).abs().sum(-1)).clamp_min(0).sum(0)
    got = routes.head_proximity_sum(y, weights, values)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(
        routes.residual_proximity(y, y * 0.3).double(), 0.3 * y.double().abs().sum(-1), rtol=1e-6, atol=0
    )
