"""AttnLRP: exact per-rule relevance balances of the patched blocks, the two forms, and clean removal.

Relevance at a block's input is x . g (g the modified gradient of u . out for an upstream relevance
direction u). Identity-rule norms and the bias-free gated MLP conserve it exactly; biases take their
share (u . bias terms); the attention block keeps half for the values and gives the softmax its rule, whose
total is 1/2 sum_ij s_ij A_ij (G_ij - sum_k A_ik G_ik) (s = scores, G = dL/dA): that term, not numerical
noise, is why the whole model's relevance sum is not the logit.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from longctx.architectures import make_config
from longctx.attribution.inputs import build_inputs
from longctx.attribution.method import method_spec
from longctx.attribution.methods.attnlrp import attnlrp, attnlrp_rules, identity_rule
from longctx.errors import UsageError

T = 7


def tiny_model(arch: str, **kwargs):
    torch.manual_seed(0)
    config = make_config(arch, **kwargs)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval().requires_grad_(False)


def relevance_in(module_call, x: torch.Tensor, u: torch.Tensor, model) -> tuple[float, torch.Tensor]:
    """(sum of x . modified gradient of u . out, the plain output) for one module call under the rules."""
    with torch.no_grad():
        plain = module_call(x)
    with attnlrp_rules(model):
        x = x.clone().requires_grad_(True)
        out = module_call(x)
        (grad,) = torch.autograd.grad((u * out).sum(), x)
    torch.testing.assert_close(out.detach(), plain, rtol=1e-5, atol=1e-6)  # the rules keep the forward values
    return float((x.detach() * grad).sum()), plain


def rand(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_rms_norm_and_gated_mlp_conserve_exactly():
    model = tiny_model("tiny-qwen3")
    layer, d = model.model.layers[0], model.config.hidden_size
    x, u = rand(1, T, d), rand(1, T, d, seed=2)
    for module in (layer.input_layernorm, layer.mlp, model.model.norm):
        total, out = relevance_in(module, x, u, model)
        assert total == pytest.approx(float((u * out).sum()), rel=1e-5, abs=1e-6)


def test_layer_norm_and_neox_mlp_conserve_up_to_their_biases():
    model = tiny_model("tiny-gpt-neox")
    layer, d = model.gpt_neox.layers[0], model.config.hidden_size
    x, u = rand(1, T, d), rand(1, T, d, seed=2)
    ln = layer.input_layernorm
    total, out = relevance_in(ln, x, u, model)
    assert total == pytest.approx(float((u * (out - ln.bias)).sum()), rel=1e-5, abs=1e-6)
    mlp = layer.mlp
    total, out = relevance_in(mlp, x, u, model)
    with torch.no_grad():
        h = mlp.dense_h_to_4h(x)
        ratio = mlp.act(h) / h  # the identity rule's constant slope
        bias_share = mlp.dense_4h_to_h.bias + (ratio * mlp.dense_h_to_4h.bias) @ mlp.dense_4h_to_h.weight.T
    assert total == pytest.approx(float((u * (out - bias_share)).sum()), rel=1e-4, abs=1e-5)


def test_attention_rule_balance_is_the_papers():
    """Under the rules, relevance in = L/2 (values) + 1/2 sum s A (G - Gbar) (softmax rule), L = u . out."""
    model = tiny_model("tiny-qwen3", attn_implementation="eager")
    attn, d = model.model.layers[0].self_attn, model.config.hidden_size
    x, u = rand(1, T, d), rand(1, T, d, seed=2)
    position_embeddings = model.model.rotary_emb(x, torch.arange(T)[None])
    mask = torch.full((T, T), float("-inf")).triu(1)[None, None]

    def call(hidden, keep_weights=None):
        out, weights = attn(hidden, position_embeddings=position_embeddings, attention_mask=mask)
        if keep_weights is not None:
            keep_weights.append(weights)
        return out

    total, _ = relevance_in(call, x, u, model)
    weights = []
    with torch.enable_grad():
        out = call(x.clone().requires_grad_(True), weights)
        loss = (u * out).sum()
        (g_attn,) = torch.autograd.grad(loss, weights[0])
    a = weights[0].detach()
    scores = torch.where(a > 0, a.log(), torch.zeros_like(a))  # = s up to a per-row constant, which cancels
    g_bar = (a * g_attn).sum(-1, keepdim=True)
    expected = 0.5 * float(loss.detach()) + 0.5 * float((scores * a * (g_attn - g_bar)).sum())
    assert total == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert abs(total - float(loss.detach())) > 1e-3  # not conserved: the softmax rule absorbs relevance


@pytest.fixture(scope="module")
def trained(tiny_dir):
    path = tiny_dir / "tiny-qwen3"
    model = AutoModelForCausalLM.from_pretrained(path).eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer, build_inputs(tokenizer, "VAR ABCDE = 12345. Where is it?", " The answer is 12345.")


def test_span_form_is_sum_of_per_token_rows(trained):
    model, tokenizer, inputs = trained
    per_token = attnlrp(model, tokenizer, inputs, method_spec("attnlrp").make_options(dict(attnlrp_form="per_token")))
    span = attnlrp(model, tokenizer, inputs, method_spec("attnlrp").make_options(dict()))
    assert span.details["attnlrp_form"] == "span" and per_token.details["attnlrp_form"] == "per_token"
    torch.testing.assert_close(span.matrix[-1, :-1], per_token.matrix.nansum(0)[:-1], rtol=1e-4, atol=1e-5)
    assert torch.equal(span.matrix.isnan(), ~inputs.causal_mask())
    with pytest.raises(UsageError):
        attnlrp(model, tokenizer, inputs, method_spec("attnlrp").make_options(dict(attnlrp_form="both")))


def test_rules_are_removed_and_values_unchanged(trained):
    model, tokenizer, inputs = trained
    with torch.no_grad():
        before = model(inputs.input_ids).logits
        with attnlrp_rules(model):
            during = model(inputs.input_ids).logits
        after = model(inputs.input_ids).logits
    torch.testing.assert_close(during, before, rtol=1e-5, atol=1e-5)
    assert torch.equal(after, before)
    for module in model.modules():
        assert "forward" not in module.__dict__ and not module._forward_hooks


def scaled_grad(t: torch.Tensor, factor: float) -> torch.Tensor:
    """Same value, gradient times ``factor`` (written independently of the module's autograd Function)."""
    return t * factor + (t * (1 - factor)).detach()


def reference_qwen3_relevance(model, ids: torch.Tensor, position: int, target: int) -> torch.Tensor:
    """A hand-written Qwen3 forward with the AttnLRP rules spelled out, relevance [T] of one target logit."""
    cfg, base = model.config, model.model
    n, heads, kv_heads, dh = len(ids), cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    x0 = base.embed_tokens.weight[ids].clone().requires_grad_(True)
    cos, sin = (t[0] for t in base.rotary_emb(x0[None], torch.arange(n)[None]))

    def rms(h, weight):
        return weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps).detach())

    def rope(t):  # [heads, n, dh]
        rotated = torch.cat([-t[..., dh // 2 :], t[..., : dh // 2]], dim=-1)
        return t * cos + rotated * sin

    def split(t, n_heads, weight):
        return rms(t.view(n, n_heads, dh), weight).transpose(0, 1)

    h, causal = x0, torch.ones(n, n, dtype=torch.bool).tril()
    for layer in base.layers:
        attn, mlp = layer.self_attn, layer.mlp
        x = rms(h, layer.input_layernorm.weight)
        q = rope(split(scaled_grad(x @ attn.q_proj.weight.T, 0.25), heads, attn.q_norm.weight))
        k = rope(split(scaled_grad(x @ attn.k_proj.weight.T, 0.25), kv_heads, attn.k_norm.weight))
        v = scaled_grad(x @ attn.v_proj.weight.T, 0.5).view(n, kv_heads, dh).transpose(0, 1)
        k, v = k.repeat_interleave(heads // kv_heads, 0), v.repeat_interleave(heads // kv_heads, 0)
        probs = ((q @ k.transpose(1, 2)) * dh**-0.5).masked_fill(~causal, float("-inf")).softmax(-1)
        h = h + (probs @ v).transpose(0, 1).reshape(n, heads * dh) @ attn.o_proj.weight.T
        x = rms(h, layer.post_attention_layernorm.weight)
        gate = x @ mlp.gate_proj.weight.T
        product = scaled_grad(gate * torch.sigmoid(gate).detach() * (x @ mlp.up_proj.weight.T), 0.5)
        h = h + product @ mlp.down_proj.weight.T
    logit = rms(h, base.norm.weight)[position] @ model.lm_head.weight[target]
    (grad,) = torch.autograd.grad(logit, x0)
    return (x0 * grad).sum(-1).detach()


def test_matches_hand_written_qwen3_reference(trained):
    """The installed rules reach every norm, MLP and attention of the real model: equal to the reference."""
    _, tokenizer, inputs = trained
    model = tiny_model("tiny-qwen3")
    result = attnlrp(model, tokenizer, inputs, method_spec("attnlrp").make_options(dict(attnlrp_form="per_token")))
    ids, cols = inputs.input_ids[0], inputs.column_positions()
    for g in (0, inputs.n_gen // 2, inputs.n_gen - 1):
        position = inputs.prompt_len + g - 1
        reference = reference_qwen3_relevance(model, ids[: position + 1], position, inputs.generation_ids[g])
        causal = cols <= position
        torch.testing.assert_close(result.matrix[g, causal], reference[cols[causal]], rtol=1e-4, atol=1e-6)


def test_identity_rule_slope():
    x = torch.tensor([-2.0, 0.0, 3.0], requires_grad=True)
    y = identity_rule(torch.nn.functional.silu, x)
    torch.testing.assert_close(y, torch.nn.functional.silu(x))
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(grad, torch.tensor([torch.sigmoid(torch.tensor(-2.0)).item(), 0.0, 0.9525741]))
