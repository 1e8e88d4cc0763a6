"""The reference protocol of IG, attention x IG, AttnLRP and the three perturbation methods equals the original
code's output (tests/fixtures/original_attribution, produced by running flashtrace 02ef4d3) on the same ids,
and the efficient protocol agrees with it where the method is the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from longctx.attribution.inputs import AttributionInputs
from longctx.attribution.method import method_spec
from longctx.attribution.methods import gradient_reference, perturbation_reference
from longctx.attribution.methods.attnlrp import AttnLRPOptions, attnlrp, attnlrp_reference
from longctx.attribution.methods.ig import Quadrature, integrated_gradients
from longctx.attribution.methods.perturbation import Sentence, eos_replacer, log_prob_drop, perturbation_position_scores
from longctx.attribution.methods.reagent import ReagentOptions
from longctx.attribution.original_sentences import attach_gaps, sentence_masks, split_sentences, splitter_description
from longctx.attribution.reference_inputs import offset_token_strings, reference_inputs
from longctx.attribution.reference_runtime import original_columns, original_ig_batch_size

FIXTURES = Path(__file__).parent / "fixtures" / "original_attribution"
REL_TOL = 1e-4
REFERENCE_METHODS = (
    "IG",
    "attention_I_G",
    "attnlrp",
    "perturbation_all",
    "perturbation_CLP",
    "perturbation_REAGENT",
)


@pytest.fixture(scope="module")
def case() -> dict:
    return json.loads((FIXTURES / "case.json").read_text())


@pytest.fixture(scope="module")
def expected() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(FIXTURES / "outputs.safetensors")


def ids_only(case) -> AttributionInputs:
    """The exact ids the original fed, without texts (methods then read token strings from decoded ids)."""
    user = case["user_prompt_indices"]
    return AttributionInputs(
        input_ids=torch.tensor([case["input_ids"]]),
        prompt_len=len(case["prompt_ids"]),
        user_span=(user[0], user[-1] + 1),
        generation_ids=case["generation_ids"],
        eos_counts=True,
        chat_template_used=True,
    )


@pytest.fixture(scope="module")
def setup(case):
    """The fixture's tiny Qwen3 (fp32, eager, parameters frozen as the artifact loads them), its tokenizer, and
    the reference construction's inputs of the original's prompt and target (checked: the original's ids)."""
    from transformers import AutoModelForCausalLM

    from longctx.models import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(
        FIXTURES / "model", dtype=torch.float32, attn_implementation="eager", local_files_only=True
    ).eval()
    model.requires_grad_(False)
    tokenizer = load_tokenizer(FIXTURES / "tokenizer")
    inputs = reference_inputs(tokenizer, case["prompt"], case["target"])
    expected_ids = ids_only(case)
    assert torch.equal(inputs.input_ids, expected_ids.input_ids) and inputs.user_span == expected_ids.user_span
    return model, tokenizer, inputs


def assert_matches(actual: torch.Tensor, reference: torch.Tensor) -> None:
    """Same NaN layout; values within REL_TOL of the largest reference value."""
    assert actual.shape == reference.shape
    assert torch.equal(torch.isnan(actual), torch.isnan(reference))
    scale = float(torch.nan_to_num(reference).abs().max())
    torch.testing.assert_close(actual, reference, rtol=REL_TOL, atol=REL_TOL * scale, equal_nan=True)


def method_options(name: str):
    if name == "perturbation_REAGENT":
        return ReagentOptions(mlm_model=str(FIXTURES / "mlm"))
    return method_spec(name).make_options()


@pytest.mark.parametrize("name", REFERENCE_METHODS)
def test_reference_protocol_equals_the_original(setup, expected, name):
    model, tokenizer, inputs = setup
    result = method_spec(name).runner("reference")(model, tokenizer, inputs, method_options(name))
    assert_matches(result.matrix, expected[f"{name}.attribution_matrix"])
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())  # restored, grads freed


def test_attention_factor_is_the_originals_query_row_mean(setup, expected):
    model, _, inputs = setup
    attention = original_columns(inputs, gradient_reference.original_attention_scores(model, inputs))
    assert_matches(attention, expected["extra.attention_only.attribution_matrix"])


def test_ig_batch_size_is_the_originals(setup, case):
    model, _, inputs = setup
    assert original_ig_batch_size(model, inputs.total) == case["batch_size"] == 13


def test_perturbation_details_record_the_splitter_and_counts(setup, case, expected):
    model, tokenizer, inputs = setup
    details = perturbation_reference.perturbation_all_reference(model, tokenizer, inputs, None).details
    without_texts = perturbation_reference.perturbation_all_reference(model, tokenizer, ids_only(case), None)
    assert_matches(without_texts.matrix, expected["perturbation_all.attribution_matrix"])  # decoded ids suffice
    assert details["sentence_splitter"] == splitter_description() and "blank('en')" in details["sentence_splitter"]
    assert (details["n_user_sentences"], details["n_output_sentences"]) == (6, 4)
    assert details["n_forwards"] == sum(1 + 6 + s for s in range(4))  # quadratic in the output sentences


def test_reagent_reference_counts_its_silent_truncation(setup):
    model, tokenizer, inputs = setup
    options = ReagentOptions(mlm_model=str(FIXTURES / "mlm"), mlm_max_length=48)
    details = method_spec("perturbation_REAGENT").runner("reference")(model, tokenizer, inputs, options).details
    assert details["n_mlm_inputs_at_max_length"] == details["n_replacements"] > 0
    assert details["n_masks_truncated"] > 0  # the later sentences' masks fall off the end: EOS padding instead


# --- the original's sentence features -------------------------------------------------------------------


def test_spacy_sentences_and_char_walk_masks_reproduce_the_original(setup, case):
    _, tokenizer, _ = setup
    user_tokens = offset_token_strings(tokenizer, case["user_prompt"])
    assert user_tokens == case["user_prompt_tokens"]
    user_sentences = split_sentences("".join(user_tokens), tokenizer.eos_token)
    assert user_sentences == case["user_prompt_sentences"]
    masks = sentence_masks(user_tokens, user_sentences)
    assert torch.equal(masks, torch.tensor(case["user_prompt_sentence_masks"]))
    generation = tokenizer.decode(case["generation_ids"], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    gen_tokens = offset_token_strings(tokenizer, generation)
    gen_sentences = split_sentences("".join(gen_tokens), tokenizer.eos_token)
    assert gen_sentences == case["generation_sentences"] and gen_sentences[-1] == tokenizer.eos_token
    assert torch.equal(sentence_masks(gen_tokens, gen_sentences), torch.tensor(case["generation_sentence_masks"]))


def test_char_walk_quirks():
    # a token with a newline counts one extra character: the next boundary moves one token right
    tokens = ["A b.", "\n", "C d", ".", " E."]
    masks = sentence_masks(tokens, ["A b.", "\nC d.", " E."])
    assert masks.argmax(0).tolist() == [0, 1, 1, 2, 2]
    # a gap of exactly one newline is appended to the end of the following sentence, other gaps prepended
    assert attach_gaps("One.\nTwo. Three.", ["One.", "Two.", "Three."]) == ["One.", "Two.\n", " Three."]
    assert split_sentences("One.\nTwo.", None) == ["One.", "\n", "Two."]  # spaCy: the newline is a sentence
    assert split_sentences("One. Two.<eos>", "<eos>") == ["One.", " Two.", "<eos>"]
    assert split_sentences("Line one\nNext line", None) == ["Line one\n", "Next line"]  # the title-case rule


# --- efficient vs reference where the method is the same -----------------------------------------------


def test_efficient_per_token_attnlrp_equals_the_reference(setup, expected):
    model, tokenizer, inputs = setup
    efficient = attnlrp(model, tokenizer, inputs, AttnLRPOptions(attnlrp_form="per_token")).matrix
    assert_matches(efficient, attnlrp_reference(model, tokenizer, inputs, None).matrix)
    span = attnlrp(model, tokenizer, inputs, AttnLRPOptions(attnlrp_form="span")).matrix
    assert_matches(span, expected["extra.attnlrp_batched.attribution_matrix"])


def test_efficient_ig_core_with_the_originals_rule_and_baseline_equals_the_reference(setup, expected):
    """The efficient IG differs by design only in its quadrature and baseline: given the original's
    (Captum's riemann_trapezoid, EOS everywhere) its core reproduces the reference rows."""
    model, tokenizer, inputs = setup
    alphas, weights = gradient_reference.original_ig_weights(20)
    rule = Quadrature("riemann_trapezoid", alphas.double(), weights.double())
    embeds = model.get_input_embeddings()(inputs.input_ids[0])
    baseline = model.get_input_embeddings()(torch.full_like(inputs.input_ids[0], tokenizer.eos_token_id))
    reference = expected["IG.attribution_matrix"]
    columns = torch.cat([torch.arange(*inputs.user_span), torch.arange(inputs.prompt_len, inputs.total)])
    for g in (0, inputs.n_gen - 1):
        length = inputs.prompt_len + g
        row = torch.full((inputs.total,), float("nan"))
        row[:length] = integrated_gradients(
            model, embeds[:length], baseline[:length], inputs.generation_ids[g], rule, batch_size=7
        )
        assert_matches(row[columns][None], reference[g][None])


def test_efficient_perturbation_with_the_originals_sentences_equals_the_reference(setup):
    """Batched, logits_to_keep, fp32: the same numbers as the original's unbatched loop wherever the original
    writes one, given the same sentence features."""
    model, tokenizer, inputs = setup
    reference = perturbation_reference.perturbation_all_reference(model, tokenizer, inputs, None).matrix
    masks, output_masks, n_prompt = perturbation_reference.feature_masks(tokenizer, inputs)
    start = inputs.user_span[0]

    def span(mask: torch.Tensor) -> tuple[int, int]:
        where = torch.where(mask == 1)[0]
        return int(where[0]), int(where[-1]) + 1

    user = [Sentence((a - start, b - start), (a, b)) for a, b in (span(masks[start + i]) for i in range(n_prompt))]
    outputs = [span(m) for m in output_masks]
    replace = eos_replacer(tokenizer.eos_token_id)
    scores, _ = perturbation_position_scores(model, tokenizer, inputs, replace, log_prob_drop, (user, outputs))
    efficient = original_columns(inputs, scores)
    defined = ~torch.isnan(reference)
    scale = float(reference[defined].abs().max())
    torch.testing.assert_close(efficient[defined], reference[defined], rtol=REL_TOL, atol=REL_TOL * scale)


def test_reference_attention_needs_a_kernel_that_returns_maps(case):
    from transformers import AutoModelForCausalLM

    from longctx.errors import UsageError

    model = AutoModelForCausalLM.from_pretrained(FIXTURES / "model", attn_implementation="sdpa", local_files_only=True)
    inputs = AttributionInputs(
        input_ids=torch.tensor([case["input_ids"][:12]]),
        prompt_len=10,
        user_span=(2, 8),
        generation_ids=case["input_ids"][10:12],
        eos_counts=False,
        chat_template_used=False,
    )
    with pytest.raises(UsageError, match="--attn-implementation eager"):
        gradient_reference.original_attention_scores(model, inputs)


def test_reference_setup_does_the_originals_untimed_work_before_timing(setup):
    """spaCy's pipeline (built at import in the original) and the masked LM (its constructor) are ready
    before the first timed reference run."""
    from longctx.attribution.methods.reagent import load_masked_lm
    from longctx.attribution.original_sentences import spacy_pipeline

    model, _, _ = setup
    for name in ("perturbation_all", "perturbation_CLP", "perturbation_REAGENT"):
        method_spec(name).reference_setup(model, method_options(name))
    assert spacy_pipeline.cache_info().currsize == 1
    assert load_masked_lm.cache_info().currsize == 1
    assert all(method_spec(name).reference_setup is None for name in ("IG", "attention_I_G", "attnlrp"))


@pytest.mark.parametrize("name", ["attnlrp", "perturbation_all", "perturbation_CLP"])
def test_reference_protocol_runs_in_fp16_as_the_original_loads_the_model(setup, expected, name):
    """fp16 weights (the original's dtype), on CPU: the same NaN layout, values within 1% of the fp32 output."""
    from transformers import AutoModelForCausalLM

    _, tokenizer, inputs = setup
    model = AutoModelForCausalLM.from_pretrained(
        FIXTURES / "model", dtype=torch.float16, attn_implementation="eager", local_files_only=True
    ).eval()
    result = method_spec(name).runner("reference")(model, tokenizer, inputs, method_options(name)).matrix
    reference = expected[f"{name}.attribution_matrix"]
    assert torch.equal(torch.isnan(result), torch.isnan(reference))
    scale = float(torch.nan_to_num(reference).abs().max())
    torch.testing.assert_close(result, reference, rtol=0, atol=0.01 * scale, equal_nan=True)
