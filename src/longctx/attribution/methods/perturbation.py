"""Sentence-level feature ablation: perturbation_all (log-prob drop) and perturbation_CLP (true KL).

The user prompt and the outputs are split into sentences (tokens whose text ends with . ! ? or a newline).
For each output sentence [a, b) the features are the user-prompt sentences and the earlier output
sentences; each is replaced (by EOS ids here, by a masked LM's guess in REAGENT), the sequence up to the
sentence is re-run under teacher forcing, and every token of the feature gets the feature's score for each
output row g in [a, b). Earlier tokens of the same output sentence are not features: their score is 0.
Ablated sequences of equal length are batched; only the rows' logits are computed (``logits_to_keep``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from longctx.attribution.embeddings import auto_batch_size, embedding_device
from longctx.attribution.inputs import AttributionInputs
from longctx.attribution.method import AttributionResult, MethodSpec, NoOptions, register
from longctx.attribution.methods.perturbation_reference import (
    build_sentence_splitter,
    perturbation_all_reference,
    perturbation_clp_reference,
)
from longctx.attribution.sentences import SPLITTER, sentence_spans
from longctx.models import eos_id


@dataclass(frozen=True)
class Sentence:
    """One feature: its span in the row's context ids (user prompt, then earlier outputs) and in input_ids."""

    context: tuple[int, int]
    position: tuple[int, int]


# (context ids, sentence) -> the ids that replace the sentence (the length may differ)
Replacer = Callable[[list[int], Sentence], list[int]]
# (original log-probs [n, V], ablated log-probs [B, n, V], target ids [n]) -> scores [B, n]
Scorer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def log_prob_drop(original: torch.Tensor, ablated: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p_orig(y_g) - log p_ablated(y_g): how much the feature supported the actual output token."""
    index = targets[None, :, None].expand(ablated.shape[0], -1, 1)
    return original.gather(-1, targets[:, None])[None, :, 0] - ablated.gather(-1, index)[..., 0]


def kl_divergence(original: torch.Tensor, ablated: torch.Tensor, _targets: torch.Tensor) -> torch.Tensor:
    """The true KL(p_orig || p_ablated) = sum_v p_orig(v) (log p_orig(v) - log p_ablated(v)), >= 0."""
    return (original.exp()[None] * (original[None] - ablated)).sum(-1).clamp_min(0)


def eos_replacer(eos_id: int) -> Replacer:
    """Replace the sentence by as many EOS ids as it has tokens."""
    return lambda _context, sentence: [eos_id] * (sentence.context[1] - sentence.context[0])


def row_sentences(tokenizer, inputs: AttributionInputs) -> tuple[list[Sentence], list[tuple[int, int]]]:
    """The user-prompt sentences (as features) and the output sentences [a, b) (as output-index spans)."""
    user_start = inputs.user_span[0]
    user = [Sentence((s, e), (user_start + s, user_start + e)) for s, e in sentence_spans(tokenizer, inputs.user_ids)]
    return user, sentence_spans(tokenizer, inputs.generation_ids)


def output_features(inputs: AttributionInputs, spans: list[tuple[int, int]]) -> list[Sentence]:
    """Earlier output sentences as features (context coordinates continue after the user prompt)."""
    n_user, p = inputs.n_user, inputs.prompt_len
    return [Sentence((n_user + a, n_user + b), (p + a, p + b)) for a, b in spans]


def ablated_sequence(ids: list[int], sentence: Sentence, replacement: list[int]) -> list[int]:
    start, end = sentence.position
    return ids[:start] + replacement + ids[end:]


def batched_row_log_probs(model, sequences: list[list[int]], n_rows: int):
    """Yield (indices, log-softmax fp32 [b, n_rows, V]) of the last ``n_rows`` positions' next-token logits.

    Sequences of equal length share a forward (no padding, so positions are exact); batch sizes come from
    ``auto_batch_size``, and only one batch of distributions is alive at a time."""
    device = embedding_device(model)
    by_length: dict[int, list[int]] = defaultdict(list)
    for index, seq in enumerate(sequences):
        by_length[len(seq)].append(index)
    with torch.no_grad():
        for length, indices in by_length.items():
            batch = auto_batch_size(model, length, len(indices), grad=False)
            for start in range(0, len(indices), batch):
                chunk = indices[start : start + batch]
                ids = torch.tensor([sequences[i] for i in chunk], device=device)
                logits = model(input_ids=ids, use_cache=False, logits_to_keep=n_rows).logits[:, -n_rows:]
                yield chunk, logits.float().log_softmax(-1)


def variant_scores(model, original: list[int], variants: list[list[int]], targets: list[int], score: Scorer):
    """Scores [len(variants), n_rows] of each ablated sequence against the original, for the last rows."""
    n_rows = len(targets)
    ((_, reference),) = batched_row_log_probs(model, [original], n_rows)
    target_ids = torch.tensor(targets, device=reference.device)
    out = torch.zeros(len(variants), n_rows)
    for chunk, log_probs in batched_row_log_probs(model, variants, n_rows):
        out[chunk] = score(reference[0], log_probs, target_ids).cpu()
    return out


def perturbation_position_scores(
    model, tokenizer, inputs: AttributionInputs, replace: Replacer, score: Scorer, sentences=None
) -> tuple[torch.Tensor, dict]:
    """Scores per absolute position [G, T] (each feature's score for each row of the current output sentence)
    and the sentence counts. ``sentences``: (user features, output spans) to use instead of ``row_sentences``."""
    user, out_spans = sentences or row_sentences(tokenizer, inputs)
    ids = inputs.input_ids[0].tolist()
    scores = torch.zeros(inputs.n_gen, inputs.total)
    for k, (a, b) in enumerate(tqdm(out_spans, desc="output sentences", leave=False, disable=None)):
        prefix = ids[: inputs.prompt_len + b - 1]  # the last input predicts output b - 1
        context = inputs.user_ids + inputs.generation_ids[:a]
        features = user + output_features(inputs, out_spans[:k])
        if not features:
            continue
        variants = [ablated_sequence(prefix, f, replace(context, f)) for f in features]
        feature_scores = variant_scores(model, prefix, variants, inputs.generation_ids[a:b], score)
        for feature, values in zip(features, feature_scores, strict=True):
            scores[a:b, feature.position[0] : feature.position[1]] = values[:, None]
    splitter = "given" if sentences else SPLITTER
    return scores, {"n_user_sentences": len(user), "n_output_sentences": len(out_spans), "sentence_splitter": splitter}


def run_perturbation(model, tokenizer, inputs: AttributionInputs, replace: Replacer, score: Scorer, details: dict):
    """Shared driver of the three perturbation methods: scores -> result matrix with the run's details."""
    scores, counts = perturbation_position_scores(model, tokenizer, inputs, replace, score)
    return AttributionResult(inputs.matrix_from_positions(scores), {**details, **counts})


def perturbation_all(model, tokenizer, inputs: AttributionInputs, options: NoOptions) -> AttributionResult:
    """Sentence ablation by EOS ids; score = drop in log p(y_g) of each output token of the current sentence."""
    details = {"replacement": "EOS ids", "score": "log p_orig(y_g) - log p_ablated(y_g)"}
    replace = eos_replacer(eos_id(tokenizer, "perturbation (sentences are replaced by EOS ids)"))
    return run_perturbation(model, tokenizer, inputs, replace, log_prob_drop, details)


def perturbation_clp(model, tokenizer, inputs: AttributionInputs, options: NoOptions) -> AttributionResult:
    """Sentence ablation by EOS ids; score = the true KL(p_orig || p_ablated) between the full next-token
    distributions at each output position (fp32 log-softmax; the seed's formula was not a true KL)."""
    details = {"replacement": "EOS ids", "score": "KL(p_orig || p_ablated), fp32 log_softmax, full vocabulary"}
    replace = eos_replacer(eos_id(tokenizer, "perturbation (sentences are replaced by EOS ids)"))
    return run_perturbation(model, tokenizer, inputs, replace, kl_divergence, details)


register(
    MethodSpec(
        "perturbation_all",
        "Perturbation (log-prob)",
        "perturbation",
        NoOptions,
        perturbation_all,
        reference=perturbation_all_reference,
        reference_setup=build_sentence_splitter,
    )
)
register(
    MethodSpec(
        "perturbation_CLP",
        "Perturbation (CLP, KL)",
        "perturbation",
        NoOptions,
        perturbation_clp,
        reference=perturbation_clp_reference,
        reference_setup=build_sentence_splitter,
    )
)
