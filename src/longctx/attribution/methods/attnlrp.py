"""AttnLRP (Achtibat et al., ICML 2024) as input x modified gradient, on Qwen3/Llama-style and GPT-NeoX models.

The explained quantity is the target logit (pre-softmax score of y_g at its predicting position; LRP
conserves a score, and log-softmax's shared log-sum-exp has no rule in the paper): relevance =
embedding x gradient of the logit under these rules, summed over embedding dims.

How the rules are installed, inside ``attnlrp_rules(model)`` and undone on exit (no transformers source is
edited, no module global is replaced):

* RMSNorm / LayerNorm: the instance's ``forward`` is shadowed by an instance attribute (``nn.Module`` calls
  ``self.forward``; under accelerate's device hooks, ``_old_forward``, which their wrapper calls) computing
  the same value with the normalizer detached: the identity rule.
* gated MLP (gate_proj, up_proj, down_proj, act_fn): forward shadowed; act(g) keeps its value but its
  gradient is act(g)/g (identity rule: SiLU(x) acts as x * sigmoid(x) with the sigmoid constant) and the
  gradient through gate * up is halved (uniform rule on the product). GPT-NeoX's MLP: identity rule on act.
* attention: forward hooks on the q/k/v projections return their output with the gradient scaled by 1/4
  (q, k) and 1/2 (v): the uniform rule on A @ V gives half of the relevance to V and half to A, and on
  Q @ K^T half of A's to each of Q and K. Between the projections and the products only linear maps
  (RoPE, q/k norms under the identity rule) act, so the scaling commutes to the product's inputs. The
  plain gradient through softmax times its input is the paper's softmax rule x_i (R_i - s_i sum_j R_j), so any
  attention implementation (sdpa, flash, eager) works unchanged.

Two forms: ``per_token`` (one forward, G backward passes with the graph retained; row g explains logit g)
and ``span`` (one backward of the sum of the G target logits; every row shows that span relevance,
causally masked). Relevance is not exactly conserved: the softmax rule and biases absorb some (see tests).
"""

from __future__ import annotations

import functools
import types
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from longctx.attribution.embeddings import input_embeddings
from longctx.attribution.inputs import AttributionInputs
from longctx.attribution.method import AttributionResult, MethodSpec, register
from longctx.attribution.reference_runtime import original_columns, trainable_parameters
from longctx.errors import UsageError
from longctx.options import check_fields, option

FORMS = ("span", "per_token")
QK_SCALE, V_SCALE = 0.25, 0.5


@dataclass(frozen=True)
class AttnLRPOptions:
    """Which AttnLRP form runs: one backward of the summed target logits, or one backward per output token."""

    attnlrp_form: str = option("span", help="span (one backward) | per_token (1 forward + G backward)", choices=FORMS)

    def __post_init__(self):
        check_fields(self)


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``scale`` (a number or a broadcastable tensor)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def scale_gradient(x: torch.Tensor, scale) -> torch.Tensor:
    return _ScaleGradient.apply(x, scale)


def identity_rule(fn, x: torch.Tensor, eps: float | None = None) -> torch.Tensor:
    """fn(x) in value; gradient fn(x)/x (fn treated as multiplication by a constant; 0 where x = 0).

    With ``eps`` the slope is the original's fn(x)/(x + eps) (lrp_rules: eps = 1e-10, which fp16 rounds
    away, so an exact zero gives 0/0 = NaN there as in the original)."""
    out = fn(x)
    ratio = torch.where(x != 0, out / x, torch.zeros_like(x)) if eps is None else out / (x + eps)
    ratio = ratio.detach()
    linear = x * ratio
    return out.detach() + (linear - linear.detach())


def rms_norm_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    """Llama/Qwen RMSNorm with the normalizer rsqrt(mean(x^2) + eps) detached (identity rule)."""
    dtype = hidden_states.dtype
    h = hidden_states.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon).detach()
    return self.weight * h.to(dtype)


def layer_norm_forward(self, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm with the standard deviation detached (identity rule; the mean subtraction is linear)."""
    h = x.to(torch.float32)
    centered = h - h.mean(-1, keepdim=True)
    h = centered / (centered.pow(2).mean(-1, keepdim=True) + self.eps).sqrt().detach()
    if self.weight is not None:
        h = h * self.weight.float()
    if self.bias is not None:
        h = h + self.bias.float()
    return h.to(x.dtype)


def gated_mlp_forward(self, x: torch.Tensor, identity_eps: float | None = None) -> torch.Tensor:
    """down(act(gate x) * up x): identity rule on act, gradient halved through the product (uniform rule)."""
    product = identity_rule(self.act_fn, self.gate_proj(x), identity_eps) * self.up_proj(x)
    return self.down_proj(scale_gradient(product, 0.5))


def neox_mlp_forward(self, x: torch.Tensor, identity_eps: float | None = None) -> torch.Tensor:
    """GPT-NeoX MLP with the identity rule on its activation."""
    return self.dense_4h_to_h(identity_rule(self.act, self.dense_h_to_4h(x), identity_eps))


def _scale_output_hook(scale):
    def hook(_module, _args, output):
        return scale_gradient(output, scale)

    return hook


def _fused_qkv_scale(attn, proj: nn.Linear) -> torch.Tensor:
    """Per-feature gradient scale of GPT-NeoX's fused projection: heads of [q | k | v], head_size each."""
    dh = attn.head_size
    head = torch.tensor([QK_SCALE] * (2 * dh) + [V_SCALE] * dh, dtype=proj.weight.dtype)
    return head.repeat(proj.out_features // (3 * dh)).to(proj.weight.device)


def _forward_for(module: nn.Module, identity_eps: float | None):
    """The LRP forward for a module that needs one (None: the module is linear or a container)."""
    name = type(module).__name__
    if isinstance(module, nn.LayerNorm):
        return layer_norm_forward
    if name.endswith("RMSNorm"):
        if not hasattr(module, "variance_epsilon"):
            raise UsageError(f"attnlrp: unsupported normalization {name} (Llama/Qwen-style RMSNorm expected)")
        return rms_norm_forward
    if all(hasattr(module, a) for a in ("gate_proj", "up_proj", "down_proj", "act_fn")):
        return functools.partial(gated_mlp_forward, identity_eps=identity_eps)
    if all(hasattr(module, a) for a in ("dense_h_to_4h", "dense_4h_to_h", "act")):
        return functools.partial(neox_mlp_forward, identity_eps=identity_eps)
    if "Norm" in name or name.endswith("MLP"):
        raise UsageError(f"attnlrp: no AttnLRP rule for {name}")
    return None


@contextmanager
def attnlrp_rules(model, identity_eps: float | None = None):
    """Install the AttnLRP rules on ``model`` (forwards shadowed per instance, q/k/v hooks); undone on exit.
    ``identity_eps``: the identity rule's slope fn(x)/(x + eps) (None: fn(x)/x, 0 at x = 0)."""
    swapped, handles, n_attention = [], [], 0
    try:
        for module in model.modules():
            forward = _forward_for(module, identity_eps)
            if forward is not None:
                # accelerate's device hooks keep the module's own forward as ``_old_forward``: swap that one
                attr = "_old_forward" if hasattr(module, "_old_forward") else "forward"
                swapped.append((module, attr, module.__dict__.get(attr)))
                setattr(module, attr, types.MethodType(forward, module))
            if all(hasattr(module, a) for a in ("q_proj", "k_proj", "v_proj")):
                for proj, scale in ((module.q_proj, QK_SCALE), (module.k_proj, QK_SCALE), (module.v_proj, V_SCALE)):
                    handles.append(proj.register_forward_hook(_scale_output_hook(scale)))
                n_attention += 1
            elif hasattr(module, "query_key_value"):
                scale = _fused_qkv_scale(module, module.query_key_value)
                handles.append(module.query_key_value.register_forward_hook(_scale_output_hook(scale)))
                n_attention += 1
        if n_attention != model.config.num_hidden_layers:
            raise UsageError(
                f"attnlrp: found {n_attention} supported attention modules for "
                f"{model.config.num_hidden_layers} layers in {type(model).__name__}"
            )
        yield model
    finally:
        for handle in handles:
            handle.remove()
        for module, attr, previous in swapped:
            if previous is None:
                delattr(module, attr)
            else:
                setattr(module, attr, previous)


def target_logits(model, inputs: AttributionInputs, embeds: torch.Tensor) -> torch.Tensor:
    """[G] logits of each output token at its predicting position (only the G rows go through the head)."""
    hidden = model.base_model(inputs_embeds=embeds[None], use_cache=False).last_hidden_state[0]
    head = model.get_output_embeddings()
    rows = hidden[inputs.generation_positions() - 1].to(head.weight.dtype)
    targets = torch.tensor(inputs.generation_ids, device=head.weight.device)
    logits = (rows.to(head.weight.device) * head.weight[targets]).sum(-1)
    return logits if head.bias is None else logits + head.bias[targets]


def attnlrp_position_scores(model, inputs: AttributionInputs, form: str) -> torch.Tensor:
    """Relevance per absolute position [G, T] of each row's target logit (span: the summed logits)."""
    # the last output token is no model input: positions < T - 1 predict every output
    embeds = input_embeddings(model, inputs.input_ids[:, :-1]).requires_grad_(True)
    scores = torch.zeros(inputs.n_gen, inputs.total)
    with attnlrp_rules(model):
        logits = target_logits(model, inputs, embeds)
        if form == "span":
            (grad,) = torch.autograd.grad(logits.sum(), embeds)
            scores[:, :-1] = (embeds.detach() * grad).float().sum(-1).cpu()
            return scores
        for g in tqdm(range(inputs.n_gen), desc="AttnLRP rows", leave=False, disable=None):
            (grad,) = torch.autograd.grad(logits[g], embeds, retain_graph=g < inputs.n_gen - 1)
            scores[g, :-1] = (embeds.detach() * grad).float().sum(-1).cpu()
    return scores


def attnlrp(model, tokenizer, inputs: AttributionInputs, options: AttnLRPOptions) -> AttributionResult:
    """AttnLRP relevance of the target logits (form: ``options.attnlrp_form``, "span" or "per_token")."""
    form = options.attnlrp_form
    scores = attnlrp_position_scores(model, inputs, form)
    details = {
        "attnlrp_form": form,
        "target": "logit of y_g at its predicting position" + (" (sum over g)" if form == "span" else ""),
        "rules": "identity (norms, activations), uniform (gate*up, QK^T, AV: q,k grad/4, v grad/2), softmax rule",
    }
    return AttributionResult(inputs.matrix_from_positions(scores), details)


ORIGINAL_IDENTITY_EPS = 1e-10  # lrp_rules.IdentityRuleImplicitFn


def attnlrp_reference(model, tokenizer, inputs: AttributionInputs, options) -> AttributionResult:
    """AttnLRP as the original time curve runs it (``calculate_attnlrp``, per token): fp32 embeddings of all T
    ids cast to the model dtype, one forward with full logits, then G backward passes (graph retained) of
    logit[P + g - 1, y_g] with the parameters trainable (weight gradients accumulate); relevance = fp32
    embeddings x their gradient, summed over dims; NaN at positions >= P + g. ``options`` are ignored."""
    embed = model.get_input_embeddings()
    dtype = next(model.parameters()).dtype
    ids = inputs.input_ids.to(embed.weight.device)
    scores = torch.full((inputs.n_gen, inputs.total), float("nan"))
    with trainable_parameters(model), attnlrp_rules(model, identity_eps=ORIGINAL_IDENTITY_EPS):
        embeds = embed(ids).float().detach().clone().requires_grad_(True)
        logits = model(inputs_embeds=embeds.to(dtype), use_cache=False).logits
        for g, target in enumerate(inputs.generation_ids):
            position = inputs.prompt_len + g
            if embeds.grad is not None:
                embeds.grad.zero_()
            logits[0, position - 1, target].backward(retain_graph=g < inputs.n_gen - 1)
            scores[g, :position] = (embeds * embeds.grad).float().sum(-1).detach().cpu()[0, :position]
    details = {
        "attnlrp_form": "per_token (original: 1 forward with full logits + G backward, weight gradients)",
        "target": "logit of y_g at its predicting position",
        "rules": "identity (norms; activations with slope act(x)/(x + 1e-10)), uniform (gate*up, QK^T, AV: "
        "q,k grad/4, v grad/2), softmax rule",
    }
    return AttributionResult(original_columns(inputs, scores), details)


register(MethodSpec("attnlrp", "AttnLRP", "relevance", AttnLRPOptions, attnlrp, reference=attnlrp_reference))
