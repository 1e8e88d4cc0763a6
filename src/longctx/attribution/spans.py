"""What the span methods (FlashTrace and its stop-token variant) explain: the original's default spans.

Both protocols read the same ``SpanPlan``, so they explain the same thing:

* ``ifr_multi_hop`` (``llm_attr.calculate_ifr_multi_hop`` with its defaults): sink span = hop span = the whole
  generation, EOS included, unweighted; nothing zeroed; every output row carries the result.
* ``ifr_multi_hop_both`` (``ft_ifr_improve.LLMIFRAttributionBoth.calculate_ifr_multi_hop_both``): the
  generation without its last token (the EOS); stop tokens -- text ``,`` or ``.`` after stripping, or only
  whitespace -- have hop-0 sink weight 0 (when the span has any) and score 0 in the user prompt and the
  outputs (chat-template tokens are never zeroed); the rows of stop tokens and of the EOS stay NaN.

Token strings are the reference construction's offset substrings when the inputs have them, else each id
decoded alone. A generation token the strings do not cover counts as a stop token in the span and its row,
and is kept in the score mask (the original's two lookups treat it so).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longctx.attribution.inputs import AttributionInputs

STOP_TOKENS = {",", "."}


@dataclass(frozen=True)
class SpanPlan:
    """The sink span, its hop-0 weights, the kept positions and the output rows that carry the result."""

    start: int  # first absolute position of the span
    end: int  # one past the last
    base_weights: torch.Tensor | None  # [end - start] hop-0 sink weights (0/1); None: unweighted
    keep: torch.Tensor  # [T] 1.0, or 0.0 at stop tokens (their scores are zeroed)
    rows: torch.Tensor  # [G] bool: output rows that carry the span's vector

    def observation(self) -> torch.Tensor:
        """m [T]: 1 on positions before the span (times ``keep``), 0 on and after it."""
        return (torch.arange(len(self.keep)) < self.start).float() * self.keep


def is_stop_token(text: str) -> bool:
    return text.strip() in STOP_TOKENS or not text.strip()


def token_texts(tokenizer, inputs: AttributionInputs) -> tuple[list[str], list[str]]:
    """User-prompt and output token strings: the reference construction's offset substrings, else decoded ids."""
    if inputs.texts is not None:
        return inputs.texts.user_prompt_tokens, inputs.texts.generation_tokens
    return inputs.token_strings(tokenizer)


def multi_hop_plan(inputs: AttributionInputs) -> SpanPlan:
    """``ifr_multi_hop``: the whole generation (EOS included), unweighted, nothing zeroed, every row."""
    rows = torch.ones(inputs.n_gen, dtype=torch.bool)
    return SpanPlan(inputs.prompt_len, inputs.total, None, torch.ones(inputs.total), rows)


def both_plan(tokenizer, inputs: AttributionInputs) -> SpanPlan | None:
    """``ifr_multi_hop_both``'s plan; None when only the EOS was generated (every row NaN then)."""
    n_span = inputs.n_gen - 1
    if n_span < 1:
        return None
    user_tokens, gen_tokens = token_texts(tokenizer, inputs)
    keep = torch.ones(inputs.total)
    for j, text in enumerate(user_tokens[: inputs.n_user]):
        if is_stop_token(text):
            keep[inputs.user_span[0] + j] = 0.0
    for g, text in enumerate(gen_tokens[: inputs.n_gen]):
        if is_stop_token(text):
            keep[inputs.prompt_len + g] = 0.0
    span_stop = torch.tensor([is_stop_token(gen_tokens[g]) if g < len(gen_tokens) else True for g in range(n_span)])
    rows = torch.zeros(inputs.n_gen, dtype=torch.bool)
    rows[:n_span] = ~span_stop
    base = (~span_stop).float() if span_stop.any() else None
    return SpanPlan(inputs.prompt_len, inputs.prompt_len + n_span, base, keep, rows)
