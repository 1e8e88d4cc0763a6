"""What an attribution explains: a teacher-forced prompt + output, built to exact token lengths.

The prompt is wrapped in the model's chat template (thinking disabled) when it has one; the output ids
follow, EOS last when appended. Result matrices are token level: row g = output token g, columns =
user-prompt tokens then output tokens, NaN where not causal (``AttributionInputs.matrix_from_positions``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from longctx.errors import UsageError
from longctx.models import eos_id

DEFAULT_TARGET_TEXT = " The answer is 42."
_USER_SENTINEL = "\u0000LONGCTX_USER_PROMPT\u0000"


@dataclass(frozen=True)
class PromptTexts:
    """The texts inputs were built from and their per-token strings (offset-mapping substrings, as the original).

    Only the reference construction (``longctx.attribution.reference_inputs``) has them: methods that work on
    text (sentence features, stop tokens) read them there instead of decoding ids one at a time.
    """

    user_prompt: str  # the user message's context as the model sees it (" " + prompt in the reference)
    formatted_prompt: str  # the whole chat-templated prompt text
    target: str  # the explained output text, without the EOS
    user_prompt_ids: list[int]  # standalone tokenization of ``user_prompt``
    prompt_tokens: list[str]  # token strings of ``formatted_prompt``
    user_prompt_tokens: list[str]  # token strings of ``user_prompt`` (standalone)
    generation_tokens: list[str]  # token strings of the decoded generation ids (EOS text last)


@dataclass
class AttributionInputs:
    """One teacher-forced example: formatted prompt ids followed by the generation ids (EOS last if appended)."""

    input_ids: torch.LongTensor  # [1, T]
    prompt_len: int  # number of formatted prompt ids
    user_span: tuple[int, int]  # [start, end) of the user-prompt tokens inside the formatted prompt
    generation_ids: list[int]  # the output ids, EOS last if appended
    eos_counts: bool  # whether the EOS is one of the G scored output rows
    chat_template_used: bool  # False: raw prompt (model without a chat template)
    details: dict = field(default_factory=dict)  # how the inputs were built (construction, length fix-ups, targets)
    texts: PromptTexts | None = None  # texts and token strings (reference construction only)

    @property
    def n_user(self) -> int:
        return self.user_span[1] - self.user_span[0]

    @property
    def n_gen(self) -> int:
        return len(self.generation_ids)

    @property
    def total(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def user_ids(self) -> list[int]:
        return self.input_ids[0, self.user_span[0] : self.user_span[1]].tolist()

    @property
    def prompt_ids(self) -> list[int]:
        return self.input_ids[0, : self.prompt_len].tolist()

    def generation_positions(self) -> torch.LongTensor:
        """Absolute positions of the output tokens (the matrix rows)."""
        return torch.arange(self.prompt_len, self.prompt_len + self.n_gen)

    def column_positions(self) -> torch.LongTensor:
        """Absolute positions of the matrix columns: user-prompt tokens, then output tokens."""
        return torch.cat([torch.arange(*self.user_span), self.generation_positions()])

    def causal_mask(self) -> torch.BoolTensor:
        """[G, n_user + G]: True where column is causal for the row (any user token; output j < g)."""
        g = torch.arange(self.n_gen)
        out_cols = g[None, :] < g[:, None]
        return torch.cat([torch.ones(self.n_gen, self.n_user, dtype=torch.bool), out_cols], dim=1)

    def matrix_from_positions(self, scores: torch.Tensor) -> torch.Tensor:
        """Map per-absolute-position scores [G, T] to the result matrix [G, n_user + G] (NaN where not causal)."""
        cols = scores.detach().to("cpu", torch.float32)[:, self.column_positions()]
        return cols.masked_fill(~self.causal_mask(), float("nan"))

    def token_strings(self, tokenizer) -> tuple[list[str], list[str]]:
        """Decoded strings of the user-prompt tokens and of the output tokens."""
        return token_strings(tokenizer, self.user_ids), token_strings(tokenizer, self.generation_ids)

    def describe(self) -> dict:
        """The actual token counts (what the time curve records)."""
        return {
            "user_prompt": self.n_user,
            "formatted_prompt": self.prompt_len,
            "generation": self.n_gen,
            "total": self.total,
            "eos_counts": self.eos_counts,
            "chat_template_used": self.chat_template_used,
        }


def token_strings(tokenizer, ids: list[int]) -> list[str]:
    """Each id decoded on its own (what a reader sees per column)."""
    return [tokenizer.decode([int(i)]) for i in ids]


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def _template_parts(tokenizer) -> tuple[str, str, bool]:
    """The formatted text before and after the user prompt (chat template, thinking disabled) or ('', '')."""
    if not getattr(tokenizer, "chat_template", None):
        return "", "", False
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": _USER_SENTINEL}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=False,
    )
    if rendered.count(_USER_SENTINEL) != 1:
        raise UsageError("the tokenizer's chat template does not place the user message verbatim")
    before, after = rendered.split(_USER_SENTINEL)
    return before, after, True


EFFICIENT_CONSTRUCTION = (
    "efficient: user ids placed verbatim in the chat template (thinking off), no wrapper, EOS id appended"
)


def _assemble(tokenizer, user_ids: list[int], gen_ids: list[int], append_eos: bool, details: dict):
    details = {"construction": EFFICIENT_CONSTRUCTION, **details}
    before, after, templated = _template_parts(tokenizer)
    prefix, suffix = _encode(tokenizer, before), _encode(tokenizer, after)
    prompt = prefix + user_ids + suffix
    generation = gen_ids + ([eos_id(tokenizer, "appending EOS to the target")] if append_eos else [])
    return AttributionInputs(
        input_ids=torch.tensor([prompt + generation], dtype=torch.long),
        prompt_len=len(prompt),
        user_span=(len(prefix), len(prefix) + len(user_ids)),
        generation_ids=generation,
        eos_counts=append_eos,
        chat_template_used=templated,
        details=details,
    )


def build_inputs(tokenizer, user_prompt: str, target_text: str, *, append_eos: bool = True) -> AttributionInputs:
    """Teacher-forced inputs for a free-text prompt and target (chat template with thinking off, if any)."""
    gen_ids = _encode(tokenizer, target_text)
    if not gen_ids and not append_eos:
        raise UsageError("the target text is empty: nothing to explain")
    return _assemble(tokenizer, _encode(tokenizer, user_prompt), gen_ids, append_eos, {"target_text": target_text})


def _tile(ids: list[int], n: int) -> list[int]:
    if not ids:
        raise UsageError("cannot tile an empty text to a token length")
    return (ids * (n // len(ids) + 1))[:n]


def exact_length_text(tokenizer, text: str, n_tokens: int, max_fixups: int = 32) -> tuple[str, list[int], int]:
    """Text whose tokenization has exactly ``n_tokens`` ids, by tiling ``text``'s ids and decoding.

    Decoding then re-encoding can merge or split tokens at tile seams, so the tiled length is adjusted
    until the re-encoded count is exact. Returns (text, ids, fix-ups used); if no fix-up converges the
    tiled ids themselves are returned (their decode is the text) and fix-ups = -1.
    """
    base = _encode(tokenizer, text)
    n = n_tokens
    for fixups in range(max_fixups):
        candidate = tokenizer.decode(_tile(base, n))
        ids = _encode(tokenizer, candidate)
        if len(ids) == n_tokens:
            return candidate, ids, fixups
        n = max(1, n + n_tokens - len(ids))
    ids = _tile(base, n_tokens)
    return tokenizer.decode(ids), ids, -1


def build_length_controlled_inputs(
    tokenizer, text: str, prompt_tokens: int, target_text: str, output_tokens: int
) -> AttributionInputs:
    """Exactly ``prompt_tokens`` user tokens (tiled ``text``) and ``output_tokens`` output tokens
    (tiled ``target_text``) followed by EOS, which is scored as the last output row."""
    if prompt_tokens <= 0 or output_tokens <= 0:
        raise UsageError(f"prompt and output lengths must be positive, got {prompt_tokens} and {output_tokens}")
    _, user_ids, fixups = exact_length_text(tokenizer, text, prompt_tokens)
    gen_ids = _tile(_encode(tokenizer, target_text), output_tokens)
    details = {
        "target_text": target_text,
        "prompt_tokens_target": prompt_tokens,
        "output_tokens_target": output_tokens,
        "user_prompt_fixups": fixups,
    }
    return _assemble(tokenizer, user_ids, gen_ids, True, details)
