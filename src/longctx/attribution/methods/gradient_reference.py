"""IG and attention x IG as the original experiment runs them (flashtrace llm_attr, run_time_curve): the
reference protocol.

IG (``calculate_IG_per_generation`` with steps=20 and the EOS baseline): for each output token g the input is
the formatted prompt plus outputs < g; x = its embeddings (fp32), x' = the EOS embedding at *every*
position (chat template and earlier outputs included); 20 points a_k = linspace(0, 1, 20), formed in fp32
and cast to the model dtype, go through the model in batches of min(20, floor((max_position_embeddings -
100) / T)) with full logits; f = log_softmax(last position's logits) at y_g in the model dtype; one backward
per batch with the parameters trainable (weight gradients too; ``zero_grad`` before each); the weights are
1/20 with both ends halved, so they sum to 0.95; the CUDA cache is emptied after every batch. Row g holds
sum_d (x - x') * sum_k w_k grad_k at positions < P + g, NaN after.

attention x IG: first G no-grad forwards of the growing input with ``output_attentions`` (all layers'
maps are stacked and averaged, a value the original computes and discards); kept is the last layer's map
averaged over heads and then over all query rows (column means of the causal map); then IG as above; the
result is their elementwise product.
"""

from __future__ import annotations

import torch

from longctx.attribution.inputs import AttributionInputs
from longctx.attribution.method import AttributionResult
from longctx.attribution.reference_runtime import (
    ORIGINAL_IG_STEPS,
    original_columns,
    original_ig_batch_size,
    release_cached_memory,
    trainable_parameters,
)
from longctx.errors import UsageError
from longctx.models import eos_id


def original_ig_weights(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The original's points linspace(0, 1, steps) and weights 1/steps with the two ends halved (fp32)."""
    alphas = torch.linspace(0, 1, steps, dtype=torch.float32)
    weights = torch.full_like(alphas, 1 / steps)
    weights[0] /= 2
    weights[-1] /= 2
    return alphas, weights


def original_ig_row(model, prefix: torch.Tensor, target: int, eos: int, batch: int, steps: int) -> torch.Tensor:
    """IG of log p(target | prefix) [1, L] against the all-EOS baseline, summed over dims: [L] (fp32, CPU)."""
    embed = model.get_input_embeddings()
    dtype = next(model.parameters()).dtype
    alphas, weights = (t.to(prefix.device) for t in original_ig_weights(steps))
    x = embed(prefix).float()
    baseline = embed(torch.full_like(prefix, eos)).float()
    total = torch.zeros(x.shape[1:], device=prefix.device)
    for start in range(0, steps, batch):
        alpha = alphas[start : start + batch].view(-1, 1, 1)
        weight = weights[start : start + batch].view(-1, 1, 1)
        points = (baseline + alpha * (x - baseline)).to(dtype).detach().clone().requires_grad_(True)
        logits = model(inputs_embeds=points).logits
        log_probs = torch.nn.functional.log_softmax(logits[:, -1, :], dim=-1)
        model.zero_grad(set_to_none=True)
        log_probs[:, target].sum().backward()
        total += ((x - baseline) * points.grad.detach().clone() * weight).sum(0)
        del points, logits, log_probs
        release_cached_memory()
    return total.sum(-1).detach().cpu()


def original_ig_scores(model, tokenizer, inputs: AttributionInputs) -> tuple[torch.Tensor, dict]:
    """[G, T] reference IG scores per absolute position (NaN at positions >= P + g) and the run's details."""
    eos = eos_id(tokenizer, "IG's baseline (the EOS embedding)")
    batch = original_ig_batch_size(model, inputs.total)
    ids = inputs.input_ids.to(model.get_input_embeddings().weight.device)
    scores = torch.full((inputs.n_gen, inputs.total), float("nan"))
    with trainable_parameters(model):
        for g, target in enumerate(inputs.generation_ids):
            length = inputs.prompt_len + g
            scores[g, :length] = original_ig_row(model, ids[:, :length], target, eos, batch, ORIGINAL_IG_STEPS)
    _, weights = original_ig_weights(ORIGINAL_IG_STEPS)
    details = {
        "ig_method": "original: linspace(0, 1, 20), weights 1/20 with ends halved",
        "n_steps": ORIGINAL_IG_STEPS,
        "quadrature_weight_sum": float(weights.sum()),
        "baseline": "EOS embedding at every position (chat template and earlier outputs included)",
        "target": "log_softmax(full logits' last row) at y_g, model dtype",
        "batch_sizes": [batch],
        "weight_gradients": True,
    }
    return scores, details


def ig_reference(model, tokenizer, inputs: AttributionInputs, options) -> AttributionResult:
    """IG exactly as the original time curve runs it (``options`` are ignored: the original fixes them)."""
    scores, details = original_ig_scores(model, tokenizer, inputs)
    return AttributionResult(original_columns(inputs, scores), details)


def original_attention_scores(model, inputs: AttributionInputs) -> torch.Tensor:
    """[G, T]: row g = the last layer's attention of the input P + g, averaged over heads and query rows."""
    ids = inputs.input_ids.to(model.get_input_embeddings().weight.device)
    scores = torch.full((inputs.n_gen, inputs.total), float("nan"))
    outputs = None  # like the original, the previous step's outputs stay alive during the next forward
    with torch.no_grad():
        for g in range(inputs.n_gen):
            length = inputs.prompt_len + g
            outputs = model(ids[:, :length], output_attentions=True)
            if not outputs.attentions:
                raise UsageError(
                    "attention_I_G (reference) reads the attention maps (output_attentions), which this attention "
                    "kernel does not return: load the model with --attn-implementation eager, the original's"
                )
            means = torch.stack(outputs.attentions, 0).mean(0).mean(1).mean(1)  # the original discards this
            means = torch.stack(outputs.attentions, 0)[-1].mean(1).mean(1)
            scores[g, :length] = means[0].float().cpu()
    del outputs, means
    return scores


def attention_ig_reference(model, tokenizer, inputs: AttributionInputs, options) -> AttributionResult:
    """attention x IG as the original runs it: the attention pass first, then IG, multiplied elementwise."""
    attention = original_attention_scores(model, inputs)
    ig_scores, details = original_ig_scores(model, tokenizer, inputs)
    details = {**details, "attention": "last layer, mean over heads, then mean over all query rows (G forwards)"}
    return AttributionResult(original_columns(inputs, attention) * original_columns(inputs, ig_scores), details)
