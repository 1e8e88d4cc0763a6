"""Integrated Gradients (Sundararajan et al., 2017) in embedding space, one output token at a time.

Row g explains f_g = log p(y_g | prompt, y_<g) under teacher forcing: the input is the embedding sequence of
positions < prompt_len + g and the score of a position is the sum over embedding dims of
``(x - x') * sum_k w_k grad f_g(x' + a_k (x - x'))``. The baseline x' is the EOS embedding at every attributed
position (user prompt tokens and earlier outputs); the chat-template wrapper tokens keep their real
embeddings in both x and x' (they are not columns, so they carry no attribution and the baseline stays a
well-formed chat turn). The quadrature (alphas a_k, weights w_k) is Captum's, by Captum's name, so the rule
is exactly the one Captum's ``IntegratedGradients`` uses. Only rules whose weights sum to 1 are accepted
(completeness up to the quadrature error): Captum's ``riemann_trapezoid`` is refused, its weights sum to
(n-1)/n, the seed's 0.95 at 20 steps. Rows are not merged into one shared forward: each row's backward
runs over the whole graph, so G backwards of length T cost more than G truncated passes of length
prompt_len + g.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from captum.attr._utils.approximation_methods import SUPPORTED_METHODS, approximation_parameters
from tqdm.auto import tqdm

from longctx.attribution.base import AttributionConfig, AttributionInputs, AttributionResult, register_method
from longctx.errors import UsageError

CPU_BATCH_LIMIT = 8  # bounded default on CPU: memory there is not the constraint, cache locality is
GPU_MEMORY_FRACTION = 0.6  # share of the free GPU memory one batch may plan to use
WEIGHT_SUM_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Quadrature:
    """A named IG quadrature rule on [0, 1]: points ``alphas`` and weights (Captum's step sizes)."""

    method: str
    alphas: torch.Tensor  # [n] float64
    weights: torch.Tensor  # [n] float64

    @property
    def weight_sum(self) -> float:
        return float(self.weights.sum())


def quadrature(method: str, n_steps: int) -> Quadrature:
    """Captum's rule ``method`` with ``n_steps`` points; only rules whose weights sum to 1 are accepted
    (gausslegendre, riemann_left/right/middle; not Captum's riemann_trapezoid, whose weights sum to (n-1)/n)."""
    if method not in SUPPORTED_METHODS:
        raise UsageError(f"unknown IG quadrature {method!r}; choose from {', '.join(SUPPORTED_METHODS)}")
    if n_steps < 2:
        raise UsageError(f"IG needs at least 2 steps, got n_steps={n_steps}")
    step_sizes, alphas = approximation_parameters(method)
    rule = Quadrature(
        method,
        torch.tensor(alphas(n_steps), dtype=torch.float64),
        torch.tensor(step_sizes(n_steps), dtype=torch.float64),
    )
    if abs(rule.weight_sum - 1.0) > WEIGHT_SUM_TOLERANCE:
        raise UsageError(
            f"IG quadrature {method!r} with {n_steps} steps has weights summing to {rule.weight_sum:.6f}, not 1 "
            "(Captum's riemann_trapezoid halves the end weights of 1/n: the seed's 0.95 at 20 steps); "
            "completeness would fail by that factor: use gausslegendre or riemann_middle"
        )
    return rule


def embedding_device(model) -> torch.device:
    return model.get_input_embeddings().weight.device


def auto_batch_size(model, seq_len: int, limit: int, *, grad: bool) -> int:
    """Sequences of length ``seq_len`` per forward (at most ``limit``): a bounded default on CPU, and on GPU
    what fits in a fixed share of the free memory by a conservative per-sequence activation estimate."""
    device = embedding_device(model)
    if device.type != "cuda":
        return max(1, min(limit, CPU_BATCH_LIMIT))
    cfg = model.config
    elem = torch.finfo(model.dtype).bits // 8
    per_layer = 16 * cfg.hidden_size + 4 * cfg.intermediate_size + cfg.num_attention_heads * seq_len
    layers = cfg.num_hidden_layers if grad else 2  # without grad only a layer's transients are alive
    per_sequence = elem * seq_len * per_layer * layers + 8 * cfg.vocab_size
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(limit, int(GPU_MEMORY_FRACTION * free) // per_sequence))


def input_embeddings(model, input_ids: torch.Tensor) -> torch.Tensor:
    """The input embeddings [T, d] of one sequence (no grad)."""
    with torch.no_grad():
        return model.get_input_embeddings()(input_ids[0].to(embedding_device(model)))


def attributed_mask(inputs: AttributionInputs) -> torch.BoolTensor:
    """[T]: True at the positions that are matrix columns (user prompt and output tokens)."""
    mask = torch.zeros(inputs.total, dtype=torch.bool)
    mask[inputs.column_positions()] = True
    return mask


def baseline_embeddings(model, inputs: AttributionInputs, embeds: torch.Tensor, token_id: int) -> torch.Tensor:
    """``embeds`` with every attributed position replaced by the embedding of ``token_id`` (EOS)."""
    token = torch.tensor([token_id], device=embeds.device)
    with torch.no_grad():
        fill = model.get_input_embeddings()(token)[0]
    mask = attributed_mask(inputs).to(embeds.device)
    return torch.where(mask[:, None], fill.expand_as(embeds), embeds)


def last_position_log_probs(model, embeds: torch.Tensor) -> torch.Tensor:
    """log-softmax (fp32) [B, V] of the last position's next-token logits for a batch [B, L, d]."""
    out = model(inputs_embeds=embeds, use_cache=False, logits_to_keep=1)
    return out.logits[:, -1].float().log_softmax(-1)


def integrated_gradients(
    model, x: torch.Tensor, baseline: torch.Tensor, target_id: int, rule: Quadrature, batch_size: int
) -> torch.Tensor:
    """Per-position IG scores [L] of log p(target | x) (the next token after x [L, d]) against ``baseline``."""
    diff = x - baseline
    total_grad = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for start in range(0, len(rule.alphas), batch_size):
        alphas = rule.alphas[start : start + batch_size].to(x.device, x.dtype)
        weights = rule.weights[start : start + batch_size].to(x.device, torch.float32)
        points = (baseline[None] + alphas[:, None, None] * diff[None]).requires_grad_(True)
        target = last_position_log_probs(model, points)[:, target_id]
        (grad,) = torch.autograd.grad(target.sum(), points)
        total_grad += torch.einsum("b,bld->ld", weights, grad.float())
    return (diff.float() * total_grad).sum(-1)


def ig_position_scores(
    model, tokenizer, inputs: AttributionInputs, config: AttributionConfig
) -> tuple[torch.Tensor, dict]:
    """IG scores per absolute position [G, T] (zeros where not an input of the row) and the run's details."""
    rule = quadrature(config.ig_method, config.n_steps)
    if config.ig_batch_size is not None and config.ig_batch_size < 1:
        raise UsageError(f"ig_batch_size must be positive or None (automatic), got {config.ig_batch_size}")
    x = input_embeddings(model, inputs.input_ids)
    if tokenizer.eos_token_id is None:
        raise UsageError("IG's baseline is the EOS embedding, but the tokenizer has no EOS token")
    baseline = baseline_embeddings(model, inputs, x, int(tokenizer.eos_token_id))
    scores = torch.zeros(inputs.n_gen, inputs.total)
    batch_sizes = set()
    for g in tqdm(range(inputs.n_gen), desc="IG rows", leave=False, disable=None):
        length = inputs.prompt_len + g
        batch = config.ig_batch_size or auto_batch_size(model, length, config.n_steps, grad=True)
        batch_sizes.add(batch)
        row = integrated_gradients(model, x[:length], baseline[:length], inputs.generation_ids[g], rule, batch)
        scores[g, :length] = row.cpu()
    details = {
        "ig_method": rule.method,
        "n_steps": config.n_steps,
        "quadrature_weight_sum": rule.weight_sum,
        "baseline": "EOS embedding at user-prompt and earlier-output positions; template tokens kept",
        "target": "log p(y_g | prompt, y_<g)",
        "batch_sizes": sorted(batch_sizes),
    }
    return scores, details


@register_method("IG")
def ig(model, tokenizer, inputs: AttributionInputs, config: AttributionConfig) -> AttributionResult:
    """Integrated Gradients per output token (see the module docstring for target, baseline and rule)."""
    scores, details = ig_position_scores(model, tokenizer, inputs, config)
    return AttributionResult(inputs.matrix_from_positions(scores), "IG", details)
