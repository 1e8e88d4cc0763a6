"""The original experiment's inputs, rebuilt: what every one of its attribution calls explains.

The original time curve (FlashTrace 02ef4d3, ``exp/exp1/run_time_curve.py`` + ``llm_attr.target_response``)
builds one cell's inputs like this, and so does this module:

1. prompt text = the RULER text's ids tiled (whole copies) to P ids, cut, decoded; the target text the same
   way from " The answer is 42." to G ids (``tiled_text``; both decodes keep tokenization spaces);
2. user prompt = " " + prompt; the user message = ``"Context:{context}\\n\\n\\nQuery: {query}"`` with that
   context and an empty query, rendered by the chat template (generation prompt on, thinking off) and
   tokenized as one text;
3. generation ids = the tokenization of ``target + eos_token`` (the EOS appended as text);
4. the user span starts at the first formatted-prompt id equal to the first id of the standalone user-prompt
   tokenization and is as long as that tokenization (the original's first-id match, quirk included: a
   boundary merge inside the template misaligns it; ``details["user_span_matches_standalone_ids"]`` says
   whether the ids under the span are the standalone ones);
5. token strings are substrings of each text by the fast tokenizer's offsets (``PromptTexts``).

The actual lengths differ from P: with Qwen3's tokenizer " " + prompt re-tokenizes one id shorter (P-1 user
tokens) and the template adds 18 ids; they are in ``describe()`` and ``details``. Public API (stable):
``reference_inputs`` (free text, for ``explain``), ``reference_inputs_to_length`` (a time cell),
``tiled_text``, ``offset_token_strings`` and ``REFERENCE_CONSTRUCTION`` (the ``details["construction"]`` tag).
"""

from __future__ import annotations

import torch

from longctx.attribution.inputs import AttributionInputs, PromptTexts
from longctx.errors import UsageError

PROMPT_WRAPPER = "Context:{context}\n\n\nQuery: {query}"
REFERENCE_CONSTRUCTION = (
    "reference: ' ' + prompt in the 'Context:{context}\\n\\n\\nQuery: ' wrapper, chat template (thinking off) "
    "tokenized as text, target + EOS tokenized as text, user span by first-id match (llm_attr.target_response)"
)


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def tiled_text(tokenizer, text: str, n_tokens: int) -> tuple[str, int]:
    """``text``'s ids repeated to at least ``n_tokens``, cut to ``n_tokens`` and decoded; (text, ids used).

    No re-tokenization fix-up: the decoded text may tokenize to another length (that is the original's).
    An empty text tiles the EOS id; ``n_tokens <= 0`` gives ("", 0).
    """
    if n_tokens <= 0:
        return "", 0
    base = _ids(tokenizer, text) or [tokenizer.eos_token_id]
    tiled = (base * (n_tokens // len(base) + 1))[:n_tokens]
    return tokenizer.decode(tiled, clean_up_tokenization_spaces=False), len(tiled)


def offset_token_strings(tokenizer, text: str) -> list[str]:
    """Each token of ``text`` as the substring its offsets cover (the original's ``decode_text_into_tokens``)."""
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    return [text[start:end] for start, end in encoding["offset_mapping"]]


def formatted_prompt(tokenizer, user_prompt: str) -> str:
    """The chat-templated user message of the original's ``format_prompt`` (wrapper, empty query, thinking off)."""
    if not getattr(tokenizer, "chat_template", None):
        raise UsageError("the reference input construction needs a tokenizer with a chat template")
    message = PROMPT_WRAPPER.format(context=user_prompt, query="")
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True, enable_thinking=False
    )


def _first_id_span(prompt_ids: list[int], user_ids: list[int]) -> tuple[int, int]:
    """[start, start + len(user_ids)) with start = the first prompt position holding ``user_ids[0]``."""
    if not user_ids:
        raise UsageError("the user prompt is empty: nothing to attribute to")
    if user_ids[0] not in prompt_ids:
        raise UsageError("the user prompt's first token does not occur in the formatted prompt")
    start = prompt_ids.index(user_ids[0])
    if start + len(user_ids) > len(prompt_ids):
        raise UsageError("the user prompt's first-id match runs past the end of the formatted prompt")
    return start, start + len(user_ids)


def reference_inputs(tokenizer, prompt: str, target: str, details: dict | None = None) -> AttributionInputs:
    """The inputs of the original's ``target_response(prompt, target)`` (see the module docstring)."""
    if tokenizer.eos_token is None:
        raise UsageError("the reference input construction appends the EOS text; the tokenizer has none")
    user_prompt = " " + prompt
    formatted = formatted_prompt(tokenizer, user_prompt)
    user_ids, prompt_ids = _ids(tokenizer, user_prompt), _ids(tokenizer, formatted)
    generation_ids = _ids(tokenizer, target + tokenizer.eos_token)
    span = _first_id_span(prompt_ids, user_ids)
    generation_text = tokenizer.decode(generation_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    texts = PromptTexts(
        user_prompt=user_prompt,
        formatted_prompt=formatted,
        target=target,
        user_prompt_ids=user_ids,
        prompt_tokens=offset_token_strings(tokenizer, formatted),
        user_prompt_tokens=offset_token_strings(tokenizer, user_prompt),
        generation_tokens=offset_token_strings(tokenizer, generation_text),
    )
    info = {
        "construction": REFERENCE_CONSTRUCTION,
        "target_text": target,
        "user_span_matches_standalone_ids": prompt_ids[span[0] : span[1]] == user_ids,
        "eos_is_last_generation_id": bool(generation_ids) and generation_ids[-1] == tokenizer.eos_token_id,
        **(details or {}),
    }
    return AttributionInputs(
        input_ids=torch.tensor([prompt_ids + generation_ids], dtype=torch.long),
        prompt_len=len(prompt_ids),
        user_span=span,
        generation_ids=generation_ids,
        eos_counts=True,
        chat_template_used=True,
        details=info,
        texts=texts,
    )


def reference_inputs_to_length(
    tokenizer, text: str, prompt_tokens: int, target_text: str, output_tokens: int
) -> AttributionInputs:
    """One time cell's inputs as the original builds them: P tiled ids of ``text``, G of ``target_text``."""
    if prompt_tokens <= 0 or output_tokens <= 0:
        raise UsageError(f"prompt and output lengths must be positive, got {prompt_tokens} and {output_tokens}")
    prompt, tiled_prompt = tiled_text(tokenizer, text, prompt_tokens)
    target, tiled_output = tiled_text(tokenizer, target_text, output_tokens)
    details = {
        "target_text": target,
        "target_base_text": target_text,
        "prompt_tokens_target": prompt_tokens,
        "output_tokens_target": output_tokens,
        "tiled_prompt_ids": tiled_prompt,
        "tiled_output_ids": tiled_output,
    }
    return reference_inputs(tokenizer, prompt, target, details)
