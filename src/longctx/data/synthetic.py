"""Deterministic synthetic English-like text for the smoke profile (no downloads).

Not a repeated sentence: a Zipf-distributed vocabulary of pronounceable pseudo-words, a sparse
random bigram structure (so a small LM can actually learn something and perplexity varies
along the text), sentences of varying length, punctuation and paragraphs. Same seed, same text.
"""

from __future__ import annotations

import numpy as np

_ONSETS = ["", "b", "c", "d", "f", "g", "h", "l", "m", "n", "p", "r", "s", "t", "v", "w", "br", "st", "th", "pl"]
_VOWELS = ["a", "e", "i", "o", "u", "ea", "ou", "ai"]
_CODAS = ["", "", "n", "s", "t", "r", "l", "nd", "st", "ng"]
FUNCTION_WORDS = ["the", "of", "and", "to", "a", "in", "he", "was", "that", "it", "his", "her", "with", "as"]


def _vocabulary(rng: np.random.Generator, size: int) -> list[str]:
    words, seen = list(FUNCTION_WORDS), set(FUNCTION_WORDS)
    while len(words) < size:
        n_syll = int(rng.choice([1, 2, 2, 3]))
        word = "".join(
            _ONSETS[rng.integers(len(_ONSETS))]
            + _VOWELS[rng.integers(len(_VOWELS))]
            + _CODAS[rng.integers(len(_CODAS))]
            for _ in range(n_syll)
        )
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def synthetic_text(n_words: int, seed: int = 0, vocab_size: int = 600) -> str:
    """About ``n_words`` words of seeded pseudo-English with Zipfian unigrams and bigram structure."""
    rng = np.random.default_rng(seed)
    vocab = _vocabulary(rng, vocab_size)
    zipf = 1.0 / np.arange(1, vocab_size + 1) ** 1.1
    zipf /= zipf.sum()
    # Each word prefers a handful of successors: a sparse bigram table mixed with the unigram prior.
    successors = rng.choice(vocab_size, size=(vocab_size, 6), p=zipf)
    out: list[str] = []
    sentence_len, word_in_sentence, prev = int(rng.integers(5, 25)), 0, int(rng.choice(vocab_size, p=zipf))
    paragraph_sentences = 0
    for _ in range(n_words):
        cur = int(successors[prev, rng.integers(6)]) if rng.random() < 0.7 else int(rng.choice(vocab_size, p=zipf))
        word = vocab[cur]
        if word_in_sentence == 0:
            word = word.capitalize()
        out.append(word)
        word_in_sentence += 1
        prev = cur
        if word_in_sentence >= sentence_len:
            out[-1] += "." if rng.random() < 0.85 else ("?" if rng.random() < 0.5 else "!")
            word_in_sentence, sentence_len = 0, int(rng.integers(5, 25))
            paragraph_sentences += 1
            if paragraph_sentences >= rng.integers(3, 8):
                out[-1] += "\n\n"
                paragraph_sentences = 0
        elif rng.random() < 0.08:
            out[-1] += ","
    return " ".join(out).replace("\n\n ", "\n\n")
