"""The reference input construction reproduces the original's ids, spans and token strings (fixture case)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from longctx.attribution.reference_inputs import (
    REFERENCE_CONSTRUCTION,
    offset_token_strings,
    reference_inputs,
    reference_inputs_to_length,
    tiled_text,
)
from longctx.errors import UsageError
from longctx.models import load_tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "original_attribution"


@pytest.fixture(scope="module")
def case() -> dict:
    return json.loads((FIXTURES / "case.json").read_text())


@pytest.fixture()
def tok():
    return load_tokenizer(FIXTURES / "tokenizer")


def test_time_cell_inputs_equal_the_originals(case, tok):
    inputs = reference_inputs_to_length(
        tok, case["base_text"], case["prompt_tokens_target"], case["target_base_text"], case["output_tokens_target"]
    )
    assert inputs.input_ids[0].tolist() == case["input_ids"]
    assert inputs.prompt_len == len(case["prompt_ids"]) and inputs.generation_ids == case["generation_ids"]
    assert list(range(*inputs.user_span)) == case["user_prompt_indices"]
    texts = inputs.texts
    assert (texts.user_prompt, texts.formatted_prompt, texts.target) == (
        case["user_prompt"],
        case["formatted_prompt"],
        case["target"],
    )
    assert texts.user_prompt_ids == case["user_prompt_ids"]
    assert texts.prompt_tokens == case["prompt_tokens"]
    assert texts.user_prompt_tokens == case["user_prompt_tokens"]
    assert texts.generation_tokens == case["generation_tokens"]
    lengths = case["model_lengths"]
    assert inputs.describe()["user_prompt"] == lengths["user_prompt_tokens"] == case["prompt_tokens_target"] + 1
    assert inputs.describe()["formatted_prompt"] == lengths["formatted_prompt_tokens"]
    assert inputs.describe()["generation"] == lengths["generation_tokens"]
    assert inputs.details["construction"] == REFERENCE_CONSTRUCTION
    assert inputs.details["user_span_matches_standalone_ids"] and inputs.details["eos_is_last_generation_id"]
    assert inputs.details["tiled_prompt_ids"] == case["actual_input_tokens"]


def test_tiled_text_is_the_originals(case, tok):
    assert tiled_text(tok, case["base_text"], case["prompt_tokens_target"]) == (case["prompt"], 64)
    assert tiled_text(tok, case["target_base_text"], 30) == (case["target"], 30)
    assert tiled_text(tok, "abc", 0) == ("", 0)
    assert tiled_text(tok, "", 2)[1] == 2  # an empty text tiles the EOS id


def test_offset_token_strings_cover_the_text(tok):
    text = " VAR ABCDE = 12345.\nHere"
    strings = offset_token_strings(tok, text)
    assert "".join(strings) == text and len(strings) == len(tok(text, add_special_tokens=False)["input_ids"])


def test_first_id_match_quirk_is_reproduced_and_flagged(tok):
    """A template whose text before the user message holds the prompt's first id: the span starts there."""
    tok.chat_template = "{{ ' The' }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    inputs = reference_inputs(tok, "The sky.", " Yes.")
    assert inputs.user_span[0] == 0
    assert inputs.details["user_span_matches_standalone_ids"] is False


def test_bad_inputs_are_usage_errors(tok):
    with pytest.raises(UsageError, match="positive"):
        reference_inputs_to_length(tok, "text", 0, " The answer.", 3)
    tok.chat_template = None
    with pytest.raises(UsageError, match="chat template"):
        reference_inputs(tok, "The sky.", " Yes.")
