"""Sentence features of the perturbation methods and FlashTrace's answer span: a token-suffix splitter.

A sentence ends at a token whose text (trailing spaces ignored) ends with ``.`` ``!`` ``?`` or a newline.
"""

from __future__ import annotations

from longctx.attribution.inputs import token_strings

SENTENCE_END = (".", "!", "?", "\n")
SPLITTER = "token-suffix rule: a sentence ends at a token ending in . ! ? or a newline"  # recorded in results


def sentence_spans(tokenizer, ids: list[int]) -> list[tuple[int, int]]:
    """Split ``ids`` into [start, end) sentence spans ending at tokens whose text ends a sentence."""
    spans, start = [], 0
    for k, text in enumerate(token_strings(tokenizer, ids)):
        if text.rstrip(" ").endswith(SENTENCE_END):
            spans.append((start, k + 1))
            start = k + 1
    if start < len(ids):
        spans.append((start, len(ids)))
    return spans
