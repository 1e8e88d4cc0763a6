"""IG and attention x IG: against Captum's IntegratedGradients, completeness, and an explicit eager attention."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from captum.attr import IntegratedGradients
from transformers import AutoModelForCausalLM, AutoTokenizer

from longctx.architectures import make_config
from longctx.attribution.inputs import AttributionInputs, build_inputs
from longctx.attribution.method import method_spec
from longctx.attribution.methods.attention_ig import attention_ig
from longctx.attribution.methods.ig import ig, quadrature
from longctx.errors import UsageError

EOS = 0
TOKENIZER = SimpleNamespace(eos_token_id=EOS)


def tiny_model(arch: str, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    config = make_config(arch, eos_token_id=EOS, bos_token_id=EOS, **kwargs)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval().requires_grad_(False)


def toy_inputs(seed: int = 0, n_prefix: int = 3, n_user: int = 6, n_suffix: int = 2, n_gen: int = 4):
    """A chat-like layout: template prefix, user tokens, template suffix, outputs ending in EOS."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 1000, (n_prefix + n_user + n_suffix + n_gen,), generator=gen)
    ids[-1] = EOS
    prompt_len = n_prefix + n_user + n_suffix
    return AttributionInputs(
        input_ids=ids[None],
        prompt_len=prompt_len,
        user_span=(n_prefix, n_prefix + n_user),
        generation_ids=ids[prompt_len:].tolist(),
        eos_counts=True,
        chat_template_used=True,
    )


def log_prob_fn(model, target: int):
    return lambda emb: model(inputs_embeds=emb).logits[:, -1].float().log_softmax(-1)[:, target]


def embeds_and_baseline(model, inputs: AttributionInputs):
    emb = model.get_input_embeddings()(inputs.input_ids)
    base = emb.clone()
    base[0, inputs.column_positions()] = model.get_input_embeddings().weight[EOS]
    return emb, base


@pytest.mark.parametrize("arch", ["tiny-qwen3", "tiny-gpt-neox"])
@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_middle"])
def test_ig_matches_captum(arch, rule):
    model, inputs = tiny_model(arch), toy_inputs()
    config = method_spec("IG").make_options(dict(n_steps=7, ig_method=rule, ig_batch_size=3))
    result = ig(model, TOKENIZER, inputs, config)
    emb, base = embeds_and_baseline(model, inputs)
    cols = inputs.column_positions()
    for g in range(inputs.n_gen):
        length = inputs.prompt_len + g
        attr = IntegratedGradients(log_prob_fn(model, inputs.generation_ids[g])).attribute(
            emb[:, :length], baselines=base[:, :length], n_steps=7, method=rule
        )
        reference = attr[0].sum(-1)
        expected = torch.full((len(cols),), float("nan"))
        causal = cols < length
        expected[causal] = reference[cols[causal]]
        torch.testing.assert_close(result.matrix[g], expected, rtol=1e-5, atol=1e-6, equal_nan=True)
        # template tokens keep their embeddings in the baseline: Captum gives them exactly zero
        template = torch.tensor([p for p in range(length) if p not in set(cols.tolist())])
        assert torch.all(reference[template] == 0)
    assert result.details["quadrature_weight_sum"] == pytest.approx(1.0, abs=1e-12)


def captum_rows(model, inputs, rule: str, n_steps: int) -> list[torch.Tensor]:
    """Captum's per-row attributions (summed over embedding dims), computed directly."""
    emb, base = embeds_and_baseline(model, inputs)
    rows = []
    for g in range(inputs.n_gen):
        length = inputs.prompt_len + g
        ig_captum = IntegratedGradients(log_prob_fn(model, inputs.generation_ids[g]))
        rows.append(ig_captum.attribute(emb[:, :length], baselines=base[:, :length], n_steps=n_steps, method=rule))
    return [row[0].sum(-1) for row in rows]


def completeness_errors(model, inputs, row_sums: list[float]) -> torch.Tensor:
    """|sum of a row's attributions - (f(x) - f(x'))| per output row."""
    emb, base = embeds_and_baseline(model, inputs)
    errors = []
    with torch.no_grad():
        for g, total in enumerate(row_sums):
            length, f = inputs.prompt_len + g, log_prob_fn(model, inputs.generation_ids[g])
            errors.append(abs(float(total) - float(f(emb[:, :length]) - f(base[:, :length]))))
    return torch.tensor(errors)


def ours(model, inputs, rule: str, n_steps: int) -> torch.Tensor:
    config = method_spec("IG").make_options(dict(n_steps=n_steps, ig_method=rule))
    return completeness_errors(model, inputs, ig(model, TOKENIZER, inputs, config).matrix.nansum(-1).tolist())


def test_completeness_within_quadrature_error():
    """Gauss-Legendre converges fast; riemann_middle as O(1/n^2); Captum's trapezoid (weights sum (n-1)/n)
    keeps a bias of |f(x) - f(x')| / n that no step count removes at a fixed relative size: refused."""
    model, inputs = tiny_model("tiny-qwen3", seed=1), toy_inputs(seed=1)
    gauss, middle, middle_fine = (
        ours(model, inputs, "gausslegendre", 20),
        ours(model, inputs, "riemann_middle", 20),
        (ours(model, inputs, "riemann_middle", 80)),
    )
    trapezoid = completeness_errors(
        model, inputs, [r.sum() for r in captum_rows(model, inputs, "riemann_trapezoid", 20)]
    )
    print(
        f"completeness |error| max: gauss {gauss.max():.2e}, middle {middle.max():.2e} -> {middle_fine.max():.2e} "
        f"(80 steps), captum trapezoid {trapezoid.max():.2e}"
    )
    assert gauss.max() < 1e-4
    assert middle_fine.max() < middle.max() / 4  # the error is the quadrature's: it shrinks as 1/n^2
    assert gauss.max() < middle.max() < trapezoid.max()
    with pytest.raises(UsageError, match="riemann_trapezoid"):
        quadrature("riemann_trapezoid", 20)


def test_batch_size_does_not_change_ig():
    model, inputs = tiny_model("tiny-gpt-neox"), toy_inputs(seed=2)
    one = ig(model, TOKENIZER, inputs, method_spec("IG").make_options(dict(n_steps=5, ig_batch_size=1))).matrix
    auto = ig(model, TOKENIZER, inputs, method_spec("IG").make_options(dict(n_steps=5))).matrix
    torch.testing.assert_close(one, auto, rtol=1e-5, atol=1e-7, equal_nan=True)


def test_quadrature_rules():
    for rule in ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle"):
        assert quadrature(rule, 20).weight_sum == pytest.approx(1.0, abs=1e-12)
    for bad_rule, steps in (("simpson", 20), ("riemann_trapezoid", 20), ("gausslegendre", 1)):
        with pytest.raises(UsageError):
            quadrature(bad_rule, steps)


@pytest.mark.parametrize("arch", ["tiny-qwen3", "tiny-gpt-neox"])
def test_attention_ig_is_ig_times_eager_attention_row(arch):
    model, inputs = tiny_model(arch), toy_inputs(seed=3)
    config = method_spec("attention_I_G").make_options(dict(n_steps=4, sink_chunk_tokens=2))
    combined = attention_ig(model, TOKENIZER, inputs, config).matrix
    ig_matrix = ig(model, TOKENIZER, inputs, config).matrix
    eager = tiny_model(arch, attn_implementation="eager")
    with torch.no_grad():
        attentions = eager(input_ids=inputs.input_ids, output_attentions=True).attentions
    rows = attentions[-1][0].mean(0)[inputs.generation_positions() - 1][:, inputs.column_positions()]
    torch.testing.assert_close(combined, ig_matrix * rows, rtol=1e-5, atol=1e-8, equal_nan=True)


def test_ig_through_registry_with_chat_template(tiny_dir):
    path = tiny_dir / "tiny-qwen3"
    model = AutoModelForCausalLM.from_pretrained(path).eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(path)
    inputs = build_inputs(tokenizer, "VAR ABCDE = 12345. Where is it?", " 12345.")
    assert inputs.chat_template_used and inputs.prompt_len > inputs.user_span[1]
    result = method_spec("IG").run(model, tokenizer, inputs, method_spec("IG").make_options(dict(n_steps=4)))
    assert result.matrix.shape == (inputs.n_gen, inputs.n_user + inputs.n_gen)
    assert torch.equal(result.matrix.isnan(), ~inputs.causal_mask())
    assert result.matrix[:, : inputs.n_user].abs().sum() > 0
