"""Perturbation methods against a slow sentence-by-sentence reference; CLP is a true KL; REAGENT's MLM limit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy.stats import entropy
from transformers import AutoModelForCausalLM, AutoTokenizer

from longctx.attribution.inputs import build_inputs
from longctx.attribution.method import method_spec
from longctx.attribution.methods.perturbation import (
    Sentence,
    log_prob_drop,
    perturbation_all,
    perturbation_clp,
    perturbation_position_scores,
)
from longctx.attribution.methods.reagent import MaskedLMReplacer, ReagentOptions, load_masked_lm, perturbation_reagent
from longctx.errors import RunFailure, UsageError

PROMPT = "VAR ABCDE = 12345. The sky is blue! Where is VAR ABCDE?\nSay it."
TARGET = " The answer is 12345. Yes."


@pytest.fixture(scope="module")
def setup(tiny_dir):
    path = tiny_dir / "tiny-qwen3"
    model = AutoModelForCausalLM.from_pretrained(path).eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer, build_inputs(tokenizer, PROMPT, TARGET)


def sentences(tokenizer, ids: list[int]) -> list[tuple[int, int]]:
    """Reference splitter: a sentence ends at a token whose text ends with . ! ? or newline."""
    spans, start = [], 0
    for k, token in enumerate(ids):
        if tokenizer.decode([token]).rstrip(" ").endswith((".", "!", "?", "\n")):
            spans.append((start, k + 1))
            start = k + 1
    return spans + ([(start, len(ids))] if start < len(ids) else [])


def next_token_log_probs(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].double().log_softmax(-1)


def slow_reference(model, tokenizer, inputs, score, replacement) -> torch.Tensor:
    """One unbatched full forward per (output token, ablated sentence); matrix [G, n_user + G]."""
    ids, p, n_user = inputs.input_ids[0].tolist(), inputs.prompt_len, inputs.n_user
    user0 = inputs.user_span[0]
    expected = torch.zeros(inputs.n_gen, n_user + inputs.n_gen, dtype=torch.float64)
    out_spans = sentences(tokenizer, inputs.generation_ids)
    features_abs = [(user0 + s, user0 + e, s) for s, e in sentences(tokenizer, inputs.user_ids)]
    for k, (a, b) in enumerate(out_spans):
        features = features_abs + [(p + s, p + e, n_user + s) for s, e in out_spans[:k]]
        for g in range(a, b):
            original = next_token_log_probs(model, ids[: p + g])
            for start, end, col in features:
                ablated = ids[:start] + replacement(end - start) + ids[end : p + g]
                value = score(original, next_token_log_probs(model, ablated), inputs.generation_ids[g])
                expected[g, col : col + end - start] = value
    return expected.float().masked_fill(~inputs.causal_mask(), float("nan"))


def drop(original, ablated, target):
    return original[target] - ablated[target]


def kl_by_hand(original, ablated, _target):
    p, q = original.exp().numpy(), ablated.exp().numpy()
    return float(np.sum(p * (np.log(p) - np.log(q))))


def test_perturbation_all_matches_slow_reference(setup):
    model, tokenizer, inputs = setup
    result = perturbation_all(model, tokenizer, inputs, method_spec("perturbation_all").make_options(dict()))
    eos = tokenizer.eos_token_id
    expected = slow_reference(model, tokenizer, inputs, drop, lambda n: [eos] * n)
    assert result.details["n_user_sentences"] == 5 and result.details["n_output_sentences"] == 3
    torch.testing.assert_close(result.matrix, expected, rtol=1e-4, atol=1e-5, equal_nan=True)
    assert result.matrix[:, : inputs.n_user].abs().sum() > 0


def test_clp_is_true_kl(setup):
    model, tokenizer, inputs = setup
    result = perturbation_clp(model, tokenizer, inputs, method_spec("perturbation_CLP").make_options(dict()))
    eos = tokenizer.eos_token_id
    expected = slow_reference(model, tokenizer, inputs, kl_by_hand, lambda n: [eos] * n)
    torch.testing.assert_close(result.matrix, expected, rtol=1e-3, atol=1e-6, equal_nan=True)
    assert (result.matrix.nan_to_num(0) >= 0).all()
    # scipy's relative entropy on one ablation agrees with the hand formula
    ids, p = inputs.input_ids[0].tolist(), inputs.prompt_len
    original = next_token_log_probs(model, ids[:p]).exp().numpy()
    ablated = next_token_log_probs(model, [eos] * inputs.user_span[1] + ids[inputs.user_span[1] : p]).exp().numpy()
    assert kl_by_hand(torch.tensor(original).log(), torch.tensor(ablated).log(), 0) == pytest.approx(
        entropy(original, ablated), rel=1e-6
    )


def test_length_changing_replacement_matches_reference(setup):
    """A replacement of a different length (as REAGENT's re-tokenized guesses) keeps rows aligned."""
    model, tokenizer, inputs = setup
    eos = tokenizer.eos_token_id
    scores, _ = perturbation_position_scores(model, tokenizer, inputs, lambda _c, _s: [eos, eos], log_prob_drop)
    expected = slow_reference(model, tokenizer, inputs, drop, lambda _n: [eos, eos])
    torch.testing.assert_close(inputs.matrix_from_positions(scores), expected, rtol=1e-4, atol=1e-5, equal_nan=True)


def test_reagent_runs_and_records(setup, tiny_dir):
    model, tokenizer, inputs = setup
    config = ReagentOptions(mlm_model=str(tiny_dir / "tiny-mlm"))
    result = perturbation_reagent(model, tokenizer, inputs, config)
    details = result.details
    assert details["n_replacements"] == 5 + 6 + 7  # 5 user sentences per output sentence + earlier outputs
    assert details["n_truncated"] == 0 and details["mlm_max_length"] == 4096
    causal = inputs.causal_mask()
    assert torch.isfinite(result.matrix[causal]).all() and result.matrix.isnan().equal(~causal)


def test_reagent_overflow_error_and_truncate(setup, tiny_dir):
    model, tokenizer, inputs = setup
    mlm = str(tiny_dir / "tiny-mlm")
    small = method_spec("perturbation_REAGENT").make_options(dict(mlm_model=mlm, mlm_max_length=12))
    with pytest.raises(RunFailure, match="mlm_max_length=12"):
        perturbation_reagent(model, tokenizer, inputs, small)
    truncated = dataclasses.replace(small, mlm_overflow="truncate")
    details = perturbation_reagent(model, tokenizer, inputs, truncated).details
    assert details["mlm_overflow"] == "truncate" and details["n_truncated"] > 0
    record = details["truncations"][0]
    assert record["mlm_tokens"] > 12 and record["dropped"] == record["mlm_tokens"] - 12
    with pytest.raises(UsageError):
        perturbation_reagent(model, tokenizer, inputs, method_spec("perturbation_REAGENT").make_options(dict()))


def test_reagent_replacement_is_the_mlm_argmax(setup, tiny_dir):
    """One replacement by hand: mask the sentence in the decoded context, argmax, decode, re-tokenize."""
    _, tokenizer, inputs = setup
    mlm, mlm_tok, _ = load_masked_lm(str(tiny_dir / "tiny-mlm"), "cpu")
    replacer = MaskedLMReplacer(mlm, mlm_tok, tokenizer, 4096, "error", tokenizer.eos_token_id)
    context = inputs.user_ids
    sentence = Sentence((5, 15), (inputs.user_span[0] + 5, inputs.user_span[0] + 15))
    left, middle, right = (tokenizer.decode(ids) for ids in (context[:5], context[5:15], context[15:]))
    n_mask = len(mlm_tok(middle, add_special_tokens=False)["input_ids"])
    text = mlm_tok.cls_token + left + mlm_tok.mask_token * n_mask + right + mlm_tok.sep_token
    encoded = torch.tensor([mlm_tok(text, add_special_tokens=False)["input_ids"]])
    assert (encoded == mlm_tok.mask_token_id).sum() == n_mask
    with torch.no_grad():
        predicted = mlm(input_ids=encoded).logits[0][encoded[0] == mlm_tok.mask_token_id].argmax(-1)
    guess = mlm_tok.decode(predicted, skip_special_tokens=True)
    expected = tokenizer(guess, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id]
    assert replacer(context, sentence) == expected
