"""Sentence ablation as the original experiment runs it (flashtrace llm_attr
``calculate_feature_ablation_sentences`` and ``..._mlm``): the reference protocol of the perturbation methods.

Features are the original's spaCy sentences mapped to tokens by its character walk
(``longctx.attribution.original_sentences``); the EOS is the last output sentence. For each output sentence
s, in order: the sequence is the formatted prompt plus the output sentences before s; one unbatched forward
of sequence + s gives the original score of s's tokens; then every prompt sentence and every earlier output
sentence is replaced in place (by EOS ids, or by the masked LM's guess in ReAGent), the sequence is scored
again by one unbatched forward, and restored. Each forward computes the full logits and a log-softmax over
every position (in the model dtype for the log-prob measure, fp32 for "CLP"), with autograd on and the
parameters trainable, as in the original (each forward keeps its activations alive). The score delta of each token of
s is written to every column of the ablated sentence; everything else stays NaN (the chat template, later
positions, and the earlier tokens of s itself).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from longctx.attribution.inputs import AttributionInputs
from longctx.attribution.method import AttributionResult
from longctx.attribution.original_sentences import (
    sentence_masks,
    spacy_pipeline,
    split_sentences,
    splitter_description,
)
from longctx.attribution.reference_inputs import offset_token_strings
from longctx.attribution.reference_runtime import original_columns, trainable_parameters
from longctx.models import eos_id

# (current sequence [1, L], positions to replace [k]) -> replacement ids [1, k]
Ablation = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# (model, sequence [1, N], response [1, M]) -> per-token scores [1, M] on the CPU
SequenceScore = Callable[..., torch.Tensor]


def response_log_probs(model, sequence: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """log p(response | sequence) per token [1, M]: full logits, log-softmax in the model dtype (the original's
    ``compute_logprob_response_given_prompt``)."""
    ids = torch.cat([sequence, response], dim=1)
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    log_probs = F.log_softmax(logits, dim=-1)
    start = sequence.shape[1]
    return log_probs[:, start - 1 : -1, :].gather(2, response.unsqueeze(-1)).squeeze(-1).detach().cpu()


def response_clp(model, sequence: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """The original's "KL" score per token [1, M] (``compute_kl_response_given_prompt``):
    f(p) = sum_v p(y) (log p(y) - log p(v)) of the distribution p at each response position, fp32.
    It is not a divergence between two distributions: perturbation_CLP reports f(p_orig) - f(p_ablated)."""
    ids = torch.cat([sequence, response], dim=1)
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.to(torch.float32)
    log_probs = F.log_softmax(logits, dim=-1)
    positions = torch.arange(sequence.shape[1], ids.shape[1], device=ids.device)
    at_response = log_probs[:, positions - 1, :]
    log_p = at_response.gather(2, response.unsqueeze(-1)).squeeze(-1)
    return ((log_p.unsqueeze(-1) - at_response) * log_p.exp().unsqueeze(-1)).sum(-1).detach().cpu()


def token_strings(tokenizer, inputs: AttributionInputs) -> tuple[list[str], list[str]]:
    """Token strings of the user prompt and of the generation (EOS text last), as the original reads them:
    from the reference construction's texts, else from the ids decoded (exact for byte-level BPE)."""
    if inputs.texts is not None:
        return inputs.texts.user_prompt_tokens, inputs.texts.generation_tokens
    texts = [
        tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        for ids in (inputs.user_ids, inputs.generation_ids)
    ]
    return offset_token_strings(tokenizer, texts[0]), offset_token_strings(tokenizer, texts[1])


def feature_masks(tokenizer, inputs: AttributionInputs) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The original's block mask [rows, cols] (prompt sentences at rows/cols from the user prompt's start,
    output sentences from row l + n / column l + m), the output sentences' masks, and the prompt-feature rows."""
    eos_text = tokenizer.eos_token
    user_tokens, generation_tokens = token_strings(tokenizer, inputs)
    prompt_masks = sentence_masks(user_tokens, split_sentences("".join(user_tokens), eos_text))
    output_masks = sentence_masks(generation_tokens, split_sentences("".join(generation_tokens), eos_text))
    start, stop = inputs.user_span
    template = sum(1 for i in range(inputs.prompt_len) if i < start or i >= stop)
    (n, m), (o, p) = prompt_masks.shape, output_masks.shape
    masks = torch.zeros(template + n + o, template + m + p)
    masks[start : start + n, start : start + m] = prompt_masks
    masks[template + n :, template + m :] = output_masks
    return masks, output_masks, n


def original_sentence_ablation(
    model, tokenizer, inputs: AttributionInputs, ablate: Ablation, score: SequenceScore
) -> tuple[torch.Tensor, dict]:
    """[G, T] scores per absolute position (NaN where the original leaves NaN) and the run's counts.

    Like the original, the forwards run with autograd on and the parameters trainable (it never uses
    ``no_grad`` there), so each forward keeps its activations for a backward that never comes: that is
    the original's memory."""
    masks, output_masks, n_prompt_sentences = feature_masks(tokenizer, inputs)
    device = model.get_input_embeddings().weight.device
    sequence = inputs.input_ids[:, : inputs.prompt_len].to(device)
    generation = torch.tensor([inputs.generation_ids], device=device)
    scores = torch.full((inputs.n_gen, inputs.total), float("nan"))
    n_forwards = 0
    with trainable_parameters(model), torch.enable_grad():
        for step in range(len(output_masks)):
            rows = torch.where(output_masks[step] == 1)[0]
            response = generation[:, rows.to(device)]
            original = score(model, sequence, response)
            n_forwards += 1
            for feature in range(len(masks) - len(output_masks) + step):
                columns = torch.where(masks[feature] == 1)[0]
                if len(columns) == 0:
                    continue
                on_device = columns.to(device)
                kept = sequence[:, on_device].clone()
                sequence[:, on_device] = ablate(sequence, on_device)
                delta = original - score(model, sequence, response)
                n_forwards += 1
                grid_rows, grid_cols = torch.meshgrid(rows, columns, indexing="ij")
                scores[grid_rows, grid_cols] = delta.reshape(-1, 1).repeat(1, len(columns)).to(scores.dtype)
                sequence[:, on_device] = kept
            sequence = torch.cat([sequence, response], dim=1)
    counts = {
        "n_user_sentences": n_prompt_sentences,
        "n_output_sentences": len(output_masks),
        "n_forwards": n_forwards,
        "sentence_splitter": splitter_description(),
    }
    return scores, counts


def build_sentence_splitter(model=None, options=None) -> None:
    """The reference setup of the perturbation methods: spaCy's pipeline, which the original builds when its
    module is imported (outside the timed call)."""
    spacy_pipeline()


def eos_ablation(eos: int) -> Ablation:
    """Every ablated position becomes the EOS id (the original's baseline)."""

    def ablate(sequence: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return torch.full((1, len(positions)), eos, dtype=sequence.dtype, device=sequence.device)

    return ablate


def run_reference_ablation(model, tokenizer, inputs, ablate: Ablation, score: SequenceScore, details: dict):
    """The reference perturbation result: the original's matrix layout, with the run's counts in the details."""
    scores, counts = original_sentence_ablation(model, tokenizer, inputs, ablate, score)
    return AttributionResult(original_columns(inputs, scores), {**details, **counts})


def perturbation_all_reference(model, tokenizer, inputs: AttributionInputs, options) -> AttributionResult:
    """perturbation_all as the original runs it: EOS ablation, log p_orig - log p_ablated (model-dtype softmax)."""
    ablate = eos_ablation(eos_id(tokenizer, "perturbation (sentences are replaced by EOS ids)"))
    details = {"replacement": "EOS ids", "score": "log p_orig(y) - log p_ablated(y), log_softmax in the model dtype"}
    return run_reference_ablation(model, tokenizer, inputs, ablate, response_log_probs, details)


def perturbation_clp_reference(model, tokenizer, inputs: AttributionInputs, options) -> AttributionResult:
    """perturbation_CLP as the original runs it: EOS ablation, f(p_orig) - f(p_ablated) (not a true KL)."""
    ablate = eos_ablation(eos_id(tokenizer, "perturbation (sentences are replaced by EOS ids)"))
    details = {"replacement": "EOS ids", "score": "f(p_orig) - f(p_ablated), f(p) = sum_v p(y)(log p(y) - log p(v))"}
    return run_reference_ablation(model, tokenizer, inputs, ablate, response_clp, details)
