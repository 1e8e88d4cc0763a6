"""The original experiment's sentence features (flashtrace shared_utils), for the reference protocol.

Text is split by spaCy: a blank English pipeline with the rule-based ``sentencizer`` and one extra rule (a
title-case token after a token containing a newline starts a sentence). The original loads
``en_core_web_sm`` when it is installed and falls back to exactly this pipeline otherwise; the model cannot
be downloaded here, so the fallback is what runs, and results record it (``SPLITTER``).

Sentences are then mapped to tokens by walking the token strings with a character counter, as the original
does, quirks included: a token containing a newline counts one character more than it has (later
boundaries move one token to the right), and a lone newline between two sentences is appended to the end
of the following sentence instead of its start. The EOS text becomes its own last sentence.
"""

from __future__ import annotations

from functools import lru_cache

import torch

NEWLINE_RULE = "longctx_newline_title_start"


def splitter_description() -> str:
    """What splits sentences (recorded in every perturbation result's details)."""
    import spacy

    return f"spaCy {spacy.__version__} blank('en') + sentencizer + newline/title-case rule (en_core_web_sm not used)"


@lru_cache(maxsize=1)
def spacy_pipeline():
    """The blank English pipeline with the sentencizer and the newline rule after it (built once)."""
    import spacy
    from spacy.language import Language

    if NEWLINE_RULE not in Language.factories:

        @Language.component(NEWLINE_RULE)
        def newline_title_start(doc):
            for i in range(1, len(doc)):
                if doc[i].is_title and "\n" in doc[i - 1].text:
                    doc[i].is_sent_start = True
            return doc

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe(NEWLINE_RULE, after="sentencizer")
    return nlp


def split_sentences(text: str, eos_text: str | None) -> list[str]:
    """The original's ``create_sentences``: spaCy sentences with the gaps between them attached (a gap of
    exactly one newline goes to the end of the next sentence, any other gap to its start); text after the last
    sentence is dropped; an EOS text inside the last sentence is moved out into a sentence of its own."""
    joined = attach_gaps(text, [span.text for span in spacy_pipeline()(text).sents])
    if eos_text and joined and eos_text in joined[-1]:
        joined[-1] = joined[-1].replace(eos_text, "")
        joined.append(eos_text)
    return joined


def attach_gaps(text: str, sentences: list[str]) -> list[str]:
    """Each sentence with the text between it and the previous one: prepended, or appended if it is exactly
    one newline (the original's quirk)."""
    gaps, cursor = [], 0
    for sentence in sentences:
        found = text.find(sentence, cursor)
        gaps.append(text[cursor:found])
        cursor = found + len(sentence)
    return [s + gap if gap == "\n" else gap + s for s, gap in zip(sentences, gaps, strict=True)]


def sentence_masks(tokens: list[str], sentences: list[str]) -> torch.Tensor:
    """The original's ``create_sentence_masks``: [n_sentences, n_tokens] 0/1, by a character walk over the
    token strings (a token with a newline counts one extra character; tokens left after the last sentence
    belong to none)."""
    masks = torch.zeros(len(sentences), len(tokens))
    current, walked = 0, 0
    for index, token in enumerate(tokens):
        masks[current, index] = 1
        walked += len(token) + ("\n" in token)
        if walked >= len(sentences[current]):
            current, walked = current + 1, 0
        if current >= len(sentences):
            break
    return masks

