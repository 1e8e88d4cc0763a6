"""The reference protocol of the routing methods: the original experiment's IFR code path, step by step.

What the original (FlashTrace 02ef4d3: ``llm_attr.LLMIFRAttribution``, ``ifr_core``,
``ft_ifr_improve.LLMIFRAttributionBoth``) does inside its timed call, and so does this module:

1. One forward of the whole sequence, LM head included, with ``output_attentions=True`` and no cache; hooks
   keep, per layer and in the model dtype, the input of ``input_layernorm`` (x), the input of
   ``post_attention_layernorm`` (y = x + attention output), the layer output and the MLP output. Every
   [1, H, T, T] attention map stays alive until the method returns (so the eager kernel is required).
2. Per layer, values are recomputed from the input norm linearised at x (fp32 ``w / sqrt(mean(x^2) + eps)``,
   eps read from the norm's ``eps`` attribute with 1e-6 as default; Qwen3's norm names it
   ``variance_epsilon``, so it is always 1e-6), cast to the model dtype and multiplied by W_V (no bias),
   then GQA-expanded; W_O is split per head.
3. ``ifr_all_positions`` (sink chunk 1 in the timed experiment, fixed here too): per layer, per chunk of sinks,
   per chunk of ``chunk_tokens`` sources up to the chunk's last sink: the (sink, source, head) terms
   ``A * (v W_O)`` in fp32, their proximities to y, masked causally, summed over heads into an accumulator
   of the model dtype; per sink normalised by (residual proximity + sum + 1e-12) and added over layers in
   fp32 on the CPU. Sinks are the output tokens' own positions; 0 at outputs k > g.
4. Span aggregate (FlashTrace): per layer, the span's y and x summed (or weighted by sink weights cast to the
   model dtype and renormalised there), the causally masked attention rows of the span summed in the model
   dtype (a [H, span, span end] product is formed), the product ``(v W_O) * summed rows`` in the model
   dtype, proximities per (source, head) summed over heads into a model-dtype accumulator, normalised.
5. Multi-hop: hop weights = the previous hop's scores on the span cast to the model dtype (``ifr_multi_hop``)
   or renormalised in fp32 (``both``); the result vector ``E0 m + r0 E1 m`` is copied into every explained row
   of a NaN-filled [G, T] matrix, whose user-prompt and output columns are returned.

The FFN and head importances the original also computes are not: they never reach the result, and cost
one reduction of blocks already formed. The explained spans and stop tokens come from
``longctx.attribution.spans`` (shared with the efficient protocol).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longctx.attribution.inputs import AttributionInputs
from longctx.attribution.method import AttributionResult, SpanScores
from longctx.attribution.spans import SpanPlan, both_plan, multi_hop_plan
from longctx.errors import UsageError

EPS = 1e-12
NORM_EPS_DEFAULT = 1e-6
SINK_CHUNK_ALL_POSITIONS = 1  # run_time_curve.make_attr_runner fixes it for ifr_all_positions


@dataclass
class StoredForward:
    """What the original keeps from its one forward: per-layer residual streams and every attention map."""

    attn_in: list[torch.Tensor]  # [1, T, d] input of input_layernorm, model dtype
    attn_mid: list[torch.Tensor]  # [1, T, d] input of post_attention_layernorm (x + attention output)
    block_out: list[torch.Tensor]  # [1, T, d] layer output (kept as the original keeps it; unused by the scores)
    mlp_out: list[torch.Tensor]  # [1, T, d] MLP output (likewise)
    attentions: tuple[torch.Tensor, ...]  # [1, H, T, T] per layer
    dtype: torch.dtype


@dataclass(frozen=True)
class Geometry:
    """Head layout read from the model config, as the original reads it."""

    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_model: int

    @classmethod
    def of(cls, model) -> Geometry:
        cfg = model.config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return cls(cfg.num_attention_heads, cfg.num_key_value_heads, head_dim, cfg.hidden_size)


def _layers(model):
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None or not all(hasattr(layer, "input_layernorm") for layer in layers):
        raise UsageError("the reference IFR path supports Llama/Qwen-style decoders only (as the original)")
    return layers


def _output_tensor(output):
    return output[0] if isinstance(output, tuple | list) else output


def stored_forward(model, input_ids: torch.Tensor) -> StoredForward:
    """The original's capture: one full forward with attention maps, four hooked streams per layer."""
    if model.config._attn_implementation != "eager":
        raise UsageError(
            "the reference protocol's IFR reads the attention maps: load the model with attn_implementation=eager "
            f"(the original's kernel), not {model.config._attn_implementation}"
        )
    dtype = next(model.parameters()).dtype
    layers = _layers(model)
    n = len(layers)
    store = StoredForward([None] * n, [None] * n, [None] * n, [None] * n, attentions=(), dtype=dtype)

    def keep(slot: list, index: int, from_output: bool):
        def hook(_module, args, output=None):
            slot[index] = (_output_tensor(output) if from_output else args[0]).detach().to(dtype)

        return hook

    handles = []
    for i, layer in enumerate(layers):
        handles += [
            layer.input_layernorm.register_forward_hook(keep(store.attn_in, i, False)),
            layer.post_attention_layernorm.register_forward_pre_hook(keep(store.attn_mid, i, False)),
            layer.mlp.register_forward_hook(keep(store.mlp_out, i, True)),
            layer.register_forward_hook(keep(store.block_out, i, True)),
        ]
    device = model.get_input_embeddings().weight.device
    ids = input_ids.to(device)
    try:
        with torch.no_grad():
            outputs = model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                use_cache=False,
                output_attentions=True,
                output_hidden_states=False,
                return_dict=True,
            )
    finally:
        for handle in handles:
            handle.remove()
    store.attentions = tuple(outputs.attentions)
    return store


def _linearised_values(layer, x: torch.Tensor, geo: Geometry, dtype: torch.dtype) -> torch.Tensor:
    """V [T, H, dh]: x through the input norm linearised at x (fp32), cast to ``dtype``, times W_V, GQA-expanded."""
    norm = layer.input_layernorm
    if not type(norm).__name__.lower().endswith("rmsnorm"):
        raise UsageError(f"the reference IFR path linearises RMSNorm only, not {type(norm).__name__}")
    xf = x.float()
    scale = (
        norm.weight.detach().to(x.device, torch.float32)
        / (xf.pow(2).mean(-1, keepdim=True) + getattr(norm, "eps", NORM_EPS_DEFAULT)).sqrt()
    )
    w_v = layer.self_attn.v_proj.weight.detach().to(x.device, dtype)
    values = torch.matmul((xf * scale).to(dtype), w_v.T).view(x.shape[0], geo.n_kv_heads, geo.head_dim)
    return values.repeat_interleave(geo.n_heads // geo.n_kv_heads, dim=1)


def _head_outputs(layer, geo: Geometry, dtype: torch.dtype, device) -> torch.Tensor:
    """W_O split per head: [H, dh, d]."""
    w_o = layer.self_attn.o_proj.weight.detach().to(device, dtype)
    return w_o.view(geo.d_model, geo.n_heads, geo.head_dim).permute(1, 2, 0).contiguous()


def _layer_tensors(model, store: StoredForward, index: int):
    """(x [T, d], y [T, d], attention [H, T, T], V [T, H, dh], W_O per head) of one layer, on its device."""
    geo, dtype = Geometry.of(model), store.dtype
    x = store.attn_in[index][0]
    y = store.attn_mid[index][0].to(x.device)
    attn = store.attentions[index][0].to(x.device, dtype)
    layer = _layers(model)[index]
    return x, y, attn, _linearised_values(layer, x, geo, dtype), _head_outputs(layer, geo, dtype, x.device)


def all_positions_scores(model, store: StoredForward, first: int, last: int, sink_chunk: int, src_chunk: int):
    """IFR rows [last - first + 1, T] (fp32, CPU) for the sinks first..last (inclusive), the original's loops."""
    n_total = store.attn_in[0].shape[1]
    total = torch.zeros(last - first + 1, n_total)
    for index in range(len(store.attn_in)):
        x, y, attn, values, w_o = _layer_tensors(model, store, index)
        y_norm = y.float().abs().sum(-1)
        resid = (y_norm - (x.float() - y.float()).abs().sum(-1)).clamp(min=0.0)
        for i0 in range(first, last + 1, sink_chunk):
            i1 = min(last + 1, i0 + sink_chunk)
            numer = torch.zeros(i1 - i0, n_total, device=x.device, dtype=store.dtype)
            for j0 in range(0, i1, src_chunk):
                j1 = min(i1, j0 + src_chunk)
                alpha = attn[:, i0:i1, j0:j1].permute(1, 2, 0).contiguous()  # [S, C, H]
                causal = (
                    torch.arange(j0, j1, device=x.device)[None, :, None]
                    <= torch.arange(i0, i1, device=x.device)[:, None, None]
                )
                head_values = torch.einsum("jhd,hdk->jhk", values[j0:j1], w_o)  # [C, H, d]
                diff = alpha.unsqueeze(-1).float() * head_values.unsqueeze(0).float()
                diff -= y[i0:i1].float()[:, None, None, :]
                prox = (y_norm[i0:i1, None, None] - diff.abs().sum(-1)).clamp(min=0.0) * causal
                numer[:, j0:j1] += prox.sum(dim=2).to(store.dtype)
            denom = resid[i0:i1] + numer.float().sum(dim=1) + EPS
            total[i0 - first : i1 - first] += (numer.float() / denom[:, None]).cpu()
    return total


def span_scores(model, store: StoredForward, start: int, last: int, src_chunk: int, weights=None) -> torch.Tensor:
    """Span aggregate [T] (fp32, CPU) of the sinks start..last (inclusive), optionally weighted: the original's."""
    n_total = store.attn_in[0].shape[1]
    n_src = last + 1
    total = torch.zeros(n_total)
    for index in range(len(store.attn_in)):
        x, y, attn, values, w_o = _layer_tensors(model, store, index)
        if weights is not None:
            w = weights.to(x.device).to(store.dtype)
            w = (w / (w.sum() + EPS)).float()[:, None]
            y_span, x_span = (y[start:n_src].float() * w).sum(0), (x[start:n_src].float() * w).sum(0)
        else:
            y_span, x_span = y[start:n_src].float().sum(0), x[start:n_src].float().sum(0)
        y_norm = y_span.abs().sum()
        resid = (y_norm - (x_span - y_span).abs().sum()).clamp(min=0.0)
        rows = attn[:, start:n_src, :n_src]
        causal = torch.arange(n_src, device=x.device)[None, :] <= torch.arange(start, n_src, device=x.device)[:, None]
        causal = causal.to(rows.dtype)
        if weights is not None:
            w = weights.to(x.device).to(rows.dtype)
            w = w / (w.sum() + EPS)
            summed = (rows * w.view(1, -1, 1) * causal.unsqueeze(0)).sum(dim=1)
        else:
            summed = (rows * causal.unsqueeze(0)).sum(dim=1)  # [H, n_src], model dtype
        numer = torch.zeros(n_src, device=x.device, dtype=store.dtype)
        for j0 in range(0, n_src, src_chunk):
            j1 = min(n_src, j0 + src_chunk)
            head_values = torch.einsum("jhd,hdk->jhk", values[j0:j1], w_o)
            weighted = head_values * summed[:, j0:j1].permute(1, 0).unsqueeze(-1)  # model dtype
            prox = (y_norm - (weighted.float() - y_span).abs().sum(-1)).clamp(min=0.0)
            numer[j0:j1] += prox.sum(dim=1).to(store.dtype)
        denom = numer.float().sum() + resid + EPS
        total[:n_src] += (numer.float() / denom).cpu()
    return total


def _finalized(inputs: AttributionInputs, scores: torch.Tensor) -> torch.Tensor:
    """[G, T] -> [G, n_user + G]: the user-prompt columns, then the output columns (the original's extraction)."""
    return scores[:, inputs.column_positions()]


def _span_result(inputs, plan: SpanPlan, observed: torch.Tensor, hops, ratios, details) -> AttributionResult:
    scores = torch.full((inputs.n_gen, inputs.total), float("nan"))
    scores[plan.rows] = observed
    details = {**details, "sink_span_absolute": [plan.start, plan.end - 1], "thinking_ratios": ratios}
    return AttributionResult(_finalized(inputs, scores), details, SpanScores(observed, plan.rows, hops))


def _details(options, protocol_note: str) -> dict:
    return {"chunk_tokens": options.chunk_tokens, "n_hops": options.n_hops, "reference_path": protocol_note}


def reference_ifr_all_positions(model, tokenizer, inputs: AttributionInputs, options) -> AttributionResult:
    """``LLMIFRAttribution(chunk_tokens, sink_chunk_tokens=1).calculate_ifr_for_all_positions``."""
    store = stored_forward(model, inputs.input_ids)
    first, last = inputs.prompt_len, inputs.total - 1
    scores = all_positions_scores(model, store, first, last, SINK_CHUNK_ALL_POSITIONS, options.chunk_tokens)
    details = {
        "row_semantics": "row g: IFR of sink position prompt_len + g (the output token's own position); "
        "0 at outputs k > g",
        "sink_positions": [first, last],
        "sink_chunk_tokens": SINK_CHUNK_ALL_POSITIONS,
        "chunk_tokens": options.chunk_tokens,
        "reference_path": "llm_attr.LLMIFRAttribution.calculate_ifr_for_all_positions",
    }
    return AttributionResult(_finalized(inputs, scores), details)


def reference_ifr_multi_hop(model, tokenizer, inputs: AttributionInputs, options) -> AttributionResult:
    """``LLMIFRAttribution.calculate_ifr_multi_hop`` with its defaults (span = the whole generation)."""
    plan = multi_hop_plan(inputs)
    store = stored_forward(model, inputs.input_ids)
    first, last = plan.start, plan.end - 1
    base = span_scores(model, store, first, last, options.chunk_tokens)
    mask = plan.observation()
    observed = base.float() * mask
    weights = base[first : last + 1].clone().to(store.dtype)
    total = float(base.sum())
    ratio = float(weights.sum()) / (total + EPS) if total > 0 else 0.0
    hops, ratios = [base], [ratio]
    for _ in range(options.n_hops):
        hop = span_scores(model, store, first, last, options.chunk_tokens, weights).float()
        hops.append(hop)
        observed += hop * mask * ratio
        weights = hop[first : last + 1].clone().to(store.dtype)
        total = float(hop.sum())
        ratio = 0.0 if total <= 0 else ratio * float(weights.sum()) / (total + EPS)
        ratios.append(ratio)
    details = _details(options, "llm_attr.LLMIFRAttribution.calculate_ifr_multi_hop")
    return _span_result(inputs, plan, observed, hops, ratios, details)


def _normalised_span(scores: torch.Tensor, span: slice) -> tuple[torch.Tensor, float]:
    raw = scores[span].nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
    mass = float(raw.sum())
    return (raw / (mass + EPS) if mass > 0 else torch.zeros_like(raw)), mass


def reference_ifr_multi_hop_both(model, tokenizer, inputs: AttributionInputs, options) -> AttributionResult:
    """``ft_ifr_improve.LLMIFRAttributionBoth.calculate_ifr_multi_hop_both`` with its defaults."""
    details = _details(options, "ft_ifr_improve.LLMIFRAttributionBoth.calculate_ifr_multi_hop_both")
    plan = both_plan(tokenizer, inputs)
    if plan is None:
        nan = torch.full((inputs.n_gen, inputs.n_user + inputs.n_gen), float("nan"))
        return AttributionResult(nan, details)
    store = stored_forward(model, inputs.input_ids)
    first, last, span = plan.start, plan.end - 1, slice(plan.start, plan.end)
    base_weights = None if plan.base_weights is None else plan.base_weights.to(store.dtype)

    def clean(scores: torch.Tensor) -> torch.Tensor:
        return scores.float().nan_to_num(nan=0.0, posinf=0.0, neginf=0.0) * plan.keep

    base = clean(span_scores(model, store, first, last, options.chunk_tokens, base_weights))
    mask = plan.observation()
    observed = base * mask
    weights, mass = _normalised_span(base, span)
    total = float(base.sum())
    ratio = mass / (total + EPS) if total > 0 else 0.0
    hops, ratios = [base], [ratio]
    for _ in range(options.n_hops):
        if mass <= 0 or ratio <= 0:
            hops.append(torch.zeros_like(base))
            ratios.append(0.0)
            continue
        hop = clean(span_scores(model, store, first, last, options.chunk_tokens, weights))
        hops.append(hop)
        observed += hop * mask * ratio
        weights, mass = _normalised_span(hop, span)
        total = float(hop.sum())
        ratio = 0.0 if total <= 0 else ratio * mass / (total + EPS)
        ratios.append(ratio)
    return _span_result(inputs, plan, observed, hops, ratios, details)
