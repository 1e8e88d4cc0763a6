"""IFR and FlashTrace against slow references built from Hugging Face's own eager attention probabilities."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from longctx.architectures import make_config
from longctx.attribution.inputs import build_inputs, token_strings
from longctx.attribution.method import method_spec
from longctx.attribution.methods.flashtrace import (
    FlashTraceOptions,
    flashtrace,
    layer_span_scores,
    span_aggregate,
    span_ifr,
)
from longctx.attribution.methods.ifr import ifr_rows
from longctx.attribution.tracing import decoder_layers, trace_layers

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
    """IFR for one sink by explicit loops over sources (proximity of the head-summed token route)."""
    total = torch.zeros(layers[0]["x"].shape[0])
    for lay in layers:
        y, r = lay["y"][sink], lay["x"][sink] + lay["b"]
        prox = torch.zeros(sink + 1)
        for j in range(sink + 1):
            c = sum(lay["A"][h, sink, j] * lay["u"][h, j] for h in range(lay["A"].shape[0]))
            prox[j] = max(0.0, float(y.abs().sum() - (y - c).abs().sum()))
        res = max(0.0, float(y.abs().sum() - (y - r).abs().sum()))
        total[: sink + 1] += prox / (prox.sum() + res)
    return total


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
    _, model, tok, inputs = loaded
    result = method_spec("ifr_all_positions").run(
        model, tok, inputs, method_spec("ifr_all_positions").make_options(dict(sink_chunk_tokens=3, chunk_tokens=4))
    )
    assert result.matrix.shape == (inputs.n_gen, inputs.n_user + inputs.n_gen)
    ref = _reference_layers(model, inputs.input_ids)
    cols = inputs.column_positions()
    for g in (0, inputs.n_gen // 2, inputs.n_gen - 1):
        expected = _reference_ifr(ref, inputs.prompt_len + g - 1)[cols]
        causal = inputs.causal_mask()[g]
        torch.testing.assert_close(result.matrix[g, causal], expected[causal], atol=1e-5, rtol=1e-4)
        assert torch.isnan(result.matrix[g, ~causal]).all()
    assert (result.matrix.nan_to_num() >= 0).all()


@pytest.mark.parametrize("sink_chunk,src_chunk", [(1, 1), (2, 7), (1000, 1000)])
def test_chunked_sinks_equal_unchunked(loaded, sink_chunk, src_chunk):
    _, model, _, inputs = loaded
    sinks = torch.arange(inputs.total)
    full = ifr_rows(model, inputs.input_ids, sinks, inputs.total, inputs.total)
    torch.testing.assert_close(
        ifr_rows(model, inputs.input_ids, sinks, sink_chunk, src_chunk), full, atol=1e-6, rtol=1e-5
    )


def test_one_token_span_equals_ifr_row(loaded):
    _, model, _, inputs = loaded
    for sink in (inputs.prompt_len - 1, inputs.total - 2):
        rows = ifr_rows(model, inputs.input_ids, torch.tensor([sink]), 4, 4)[0]
        span = span_ifr(model, inputs.input_ids, torch.tensor([sink]), torch.tensor([1.0]), 4, 4)
        torch.testing.assert_close(span, rows, atol=1e-6, rtol=1e-5)


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


def test_multi_hop_accumulates_prompt_scores_by_hop_mass(loaded):
    _, model, _, inputs = loaded
    config = method_spec("ifr_multi_hop").make_options(dict(n_hops=2, sink_chunk_tokens=4, chunk_tokens=4))
    target = torch.zeros(inputs.n_gen)
    target[-3:] = 1.0
    hop_tokens = torch.arange(inputs.n_gen - 3)
    zero = torch.zeros(inputs.total, dtype=torch.bool)
    scores, masses = flashtrace(model, inputs, target, hop_tokens, zero, config)
    # Reference: the docstring's recursion written out with plain span IFR calls.
    rows = inputs.generation_positions() - 1
    s0 = span_ifr(model, inputs.input_ids, rows[-3:], torch.ones(3) / 3, 4, 4)
    s0 = s0 / s0.sum()
    hop = inputs.prompt_len + hop_tokens
    expected, rho, s = s0.clone(), 1.0, s0
    for m in masses:
        assert m == pytest.approx(float(s[hop].sum()), rel=1e-4)
        rho *= m
        s = span_ifr(model, inputs.input_ids, hop, s[hop] / m, 4, 4)
        s = s / s.sum()
        expected[: inputs.prompt_len] += rho * s[: inputs.prompt_len]
    assert len(masses) == 2 and 0 < masses[0] < 1
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-4)


def test_flashtrace_methods_shape_and_stop_words(loaded):
    _, model, tok, inputs = loaded
    for name in ("ifr_multi_hop", "ifr_multi_hop_both"):
        result = method_spec(name).run(model, tok, inputs, FlashTraceOptions(sink_chunk_tokens=4, chunk_tokens=8))
        assert result.matrix.shape == (inputs.n_gen, inputs.n_user + inputs.n_gen)
        assert torch.equal(torch.isnan(result.matrix), ~inputs.causal_mask())
        assert result.details["hop_masses"], name
    strings = token_strings(tok, inputs.user_ids + inputs.generation_ids)
    stop = torch.tensor([s.strip() in {",", "."} or not s.strip() for s in strings])
    assert stop.any()
    last = result.matrix[-1]
    assert (last[stop & ~torch.isnan(last)] == 0).all()
    assert (last[~stop & ~torch.isnan(last)] > 0).any()
    assert result.details["hop_span_tokens"] == inputs.n_gen - 1


MEMORY_SCRIPT = """
import json, sys, torch
from transformers import AutoModelForCausalLM, Qwen3Config
from longctx.architectures import make_config
from longctx.attribution.inputs import AttributionInputs
from longctx.attribution.method import method_spec
from longctx.attribution.methods.flashtrace import flashtrace
from longctx.measure.memory import PeakMemory
torch.manual_seed(0)
torch.set_num_threads(1)
config = Qwen3Config(vocab_size=512, hidden_size=512, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=32, intermediate_size=1024, max_position_embeddings=8192)
model = AutoModelForCausalLM.from_config(config).eval().requires_grad_(False)
peaks = {}
for g in (256, 256, 1024, 4096):  # the first call warms up lazily initialised state
    ids = torch.randint(0, 512, (1, 10 + g + 1))
    inputs = AttributionInputs(ids, 10, (0, 10), ids[0, 10:].tolist(), True, False)
    with PeakMemory() as mem:
        flashtrace(model, inputs, torch.ones(g + 1), torch.arange(g), torch.zeros(g + 11, dtype=torch.bool),
                   method_spec("ifr_multi_hop_both").make_options(dict(chunk_tokens=128, sink_chunk_tokens=32)))
    peaks[g] = mem.record()["allocated_bytes"]
print(json.dumps(peaks))
"""


def test_flashtrace_peak_memory_grows_linearly_with_output_length():
    """Issue 7: peak memory above the 256-token level grows ~5x from 1024 to 4096 output tokens (linear),
    not ~17x (quadratic, as when full attention maps are kept). Measured as the CPU RSS high-water mark in a
    fresh process whose large allocations are mmapped, so freed memory leaves RSS and each peak is its own.
    The [G, P+G] result matrix (CPU-side, quadratic by the API) is not part of this computation."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT], env=env, capture_output=True, text=True, check=True)
    peaks = {int(k): v for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}
    growth = (peaks[4096] - peaks[256]) / (peaks[1024] - peaks[256])
    assert 2.5 < growth < 9, peaks
