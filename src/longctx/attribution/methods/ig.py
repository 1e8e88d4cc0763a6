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
from tqdm.auto import tqdm

from longctx.attribution.embeddings import auto_batch_size, input_embeddings
from longctx.attribution.inputs import AttributionInputs
from longctx.attribution.method import AttributionResult, MethodSpec, register
from longctx.attribution.methods.gradient_reference import ig_reference
from longctx.errors import UsageError
from longctx.models import eos_id
from longctx.options import check_fields, option

WEIGHT_SUM_TOLERANCE = 1e-9


@dataclass(frozen=True)
class IGOptions:
    """Integrated Gradients settings."""

    n_steps: int = option(20, help="IG interpolation steps", minimum=2)
    ig_method: str = option("gausslegendre", help="IG quadrature (Captum's names; weights must sum to 1)")
    ig_batch_size: int | None = option(None, help="IG points per batch (default: automatic)", minimum=1)

    def __post_init__(self):
        check_fields(self)


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
    from captum.attr._utils.approximation_methods import SUPPORTED_METHODS, approximation_parameters

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
    """Per-position IG scores [L] of log p(target | x) (the next token after x [L, d]) against ``baseline``.
    The points are formed in fp32 and cast to the model dtype (as the original does), not formed in bf16."""
    start_point, diff = baseline.float(), x.float() - baseline.float()
    total_grad = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for start in range(0, len(rule.alphas), batch_size):
        alphas = rule.alphas[start : start + batch_size].to(x.device, torch.float32)
        weights = rule.weights[start : start + batch_size].to(x.device, torch.float32)
        points = (start_point[None] + alphas[:, None, None] * diff[None]).to(x.dtype).requires_grad_(True)
        target = last_position_log_probs(model, points)[:, target_id]
        (grad,) = torch.autograd.grad(target.sum(), points)
        total_grad += torch.einsum("b,bld->ld", weights, grad.float())
    return (diff * total_grad).sum(-1)


def ig_position_scores(model, tokenizer, inputs: AttributionInputs, options: IGOptions) -> tuple[torch.Tensor, dict]:
    """IG scores per absolute position [G, T] (zeros where not an input of the row) and the run's details."""
    rule = quadrature(options.ig_method, options.n_steps)
    x = input_embeddings(model, inputs.input_ids)
    baseline = baseline_embeddings(model, inputs, x, eos_id(tokenizer, "IG's baseline (the EOS embedding)"))
    scores = torch.zeros(inputs.n_gen, inputs.total)
    batch_sizes = set()
    for g in tqdm(range(inputs.n_gen), desc="IG rows", leave=False, disable=None):
        length = inputs.prompt_len + g
        batch = options.ig_batch_size or auto_batch_size(model, length, options.n_steps, grad=True)
        batch_sizes.add(batch)
        row = integrated_gradients(model, x[:length], baseline[:length], inputs.generation_ids[g], rule, batch)
        scores[g, :length] = row.cpu()
    details = {
        "ig_method": rule.method,
        "n_steps": options.n_steps,
        "quadrature_weight_sum": rule.weight_sum,
        "baseline": "EOS embedding at user-prompt and earlier-output positions; template tokens kept",
        "target": "log p(y_g | prompt, y_<g)",
        "batch_sizes": sorted(batch_sizes),
    }
    return scores, details


def ig(model, tokenizer, inputs: AttributionInputs, options: IGOptions) -> AttributionResult:
    """Integrated Gradients per output token (see the module docstring for target, baseline and rule)."""
    scores, details = ig_position_scores(model, tokenizer, inputs, options)
    return AttributionResult(inputs.matrix_from_positions(scores), details)


register(MethodSpec("IG", "IG", "gradient", IGOptions, ig, reference=ig_reference))
