"""The attribution core: exact-length inputs, user span, causal matrix layout, registry."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from longctx.attribution.inputs import (
    AttributionInputs,
    build_inputs,
    build_length_controlled_inputs,
    exact_length_text,
)
from longctx.attribution.method import method_names, method_spec, methods, register
from longctx.attribution.sentences import sentence_spans
from longctx.data.ruler import variable_tracking_sample
from longctx.errors import UsageError


@pytest.fixture(scope="module", params=["tiny-qwen3", "tiny-gpt-neox"])
def tok(request, tiny_dir):
    return AutoTokenizer.from_pretrained(tiny_dir / request.param)


def _encode(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("p,g", [(1, 1), (10, 10), (37, 5), (300, 64)])
def test_length_controlled_inputs_are_exact(tok, p, g):
    text = variable_tracking_sample(0).text
    inputs = build_length_controlled_inputs(tok, text, p, " The answer is 42.", g)
    assert inputs.n_user == p and len(_encode(tok, tok.decode(inputs.user_ids))) == p
    assert inputs.n_gen == g + 1 and inputs.generation_ids[-1] == tok.eos_token_id and inputs.eos_counts
    assert inputs.generation_ids[:-1] == (_encode(tok, " The answer is 42.") * g)[:g]
    assert inputs.total == inputs.prompt_len + inputs.n_gen
    assert inputs.input_ids[0, inputs.prompt_len :].tolist() == inputs.generation_ids
    templated = tok.chat_template is not None
    assert inputs.chat_template_used == templated
    prompt_text = tok.decode(inputs.prompt_ids)
    if templated:
        assert prompt_text.startswith("<|im_start|>user\n") and prompt_text.endswith("<think>\n\n</think>\n\n")
        assert inputs.prompt_len > inputs.n_user
    else:
        assert inputs.user_span == (0, inputs.prompt_len)
    counts = inputs.describe()
    assert (counts["user_prompt"], counts["generation"], counts["total"]) == (p, g + 1, inputs.total)


def test_build_inputs_locates_the_user_prompt(tok):
    prompt = "VAR ABCDE = 12345. Question: which variables?"
    inputs = build_inputs(tok, prompt, " ABCDE.")
    assert inputs.user_ids == _encode(tok, prompt)
    assert inputs.generation_ids == _encode(tok, " ABCDE.") + [tok.eos_token_id]
    assert build_inputs(tok, prompt, " ABCDE.", append_eos=False).n_gen == inputs.n_gen - 1


class _SeamTokenizer:
    """Characters are tokens, except that "ab" is one token: tiling "b...a" ids then decoding merges seams."""

    def __call__(self, text, add_special_tokens=False, verbose=True):
        ids, k = [], 0
        while k < len(text):
            if text[k : k + 2] == "ab":
                ids.append(1000)
                k += 2
            else:
                ids.append(ord(text[k]))
                k += 1
        return {"input_ids": ids}

    def decode(self, ids):
        return "".join("ab" if i == 1000 else chr(i) for i in ids)


@pytest.mark.parametrize("n", [2, 5, 11, 40])
def test_exact_length_fixes_up_retokenization_merges(n):
    tok = _SeamTokenizer()
    text, ids, fixups = exact_length_text(tok, "bxa", n)
    assert len(tok(text)["input_ids"]) == n and ids == tok(text)["input_ids"]
    if n >= 5:
        assert fixups > 0  # the naive tile of n ids re-encodes shorter (a|b seams merge)


def test_causal_mask_and_position_mapping():
    ids = torch.arange(12)[None]
    inputs = AttributionInputs(ids, prompt_len=8, user_span=(2, 6), generation_ids=[8, 9, 10, 11], eos_counts=True,
                               chat_template_used=True)  # fmt: skip
    scores = torch.arange(4 * 12, dtype=torch.float32).view(4, 12)
    matrix = inputs.matrix_from_positions(scores)
    assert matrix.shape == (4, 4 + 4)
    for g in range(4):
        for c in range(8):
            position = [2, 3, 4, 5, 8, 9, 10, 11][c]
            causal = c < 4 or (c - 4) < g
            assert (matrix[g, c].item() == scores[g, position].item()) if causal else torch.isnan(matrix[g, c])


def test_sentence_spans(tiny_dir):
    tok = AutoTokenizer.from_pretrained(tiny_dir / "tiny-qwen3")
    ids = _encode(tok, "The sky is blue. The sun is yellow! Here we go")
    spans = sentence_spans(tok, ids)
    assert [tok.decode(ids[a:b]) for a, b in spans] == ["The sky is blue.", " The sun is yellow!", " Here we go"]


def test_registry_has_every_method_once_with_its_label_and_options():
    names = method_names()
    assert names == (
        "IG",
        "attention_I_G",
        "attnlrp",
        "perturbation_all",
        "perturbation_CLP",
        "perturbation_REAGENT",
        "ifr_all_positions",
        "ifr_multi_hop",
        "ifr_multi_hop_both",
    )
    specs = methods()
    assert specs["ifr_multi_hop"].label == "FlashTrace" and specs["ifr_multi_hop_both"].label == "FlashTrace (both)"
    for name in names:
        spec = method_spec(name)
        assert spec.name == name and callable(spec.run) and spec.options() == spec.make_options(None)
    with pytest.raises(UsageError, match="unknown attribution method"):
        method_spec("nope")
    with pytest.raises(UsageError, match="has no option n_steps"):
        method_spec("attnlrp").make_options({"n_steps": 3})
    with pytest.raises(ValueError, match="registered twice"):
        register(method_spec("IG"))
