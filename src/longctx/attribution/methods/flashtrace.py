"""FlashTrace: IFR for a whole span of sink positions at once, by linearity, with multi-hop re-aggregation.

Span IFR. For sinks i with weights w_i the span's attention output is ``sum_i w_i y_i``; by linearity its
decomposition has terms ``a_hj W_O,h v_hj`` with the aggregated rows ``a_hj = sum_i w_i A[h,i,j]`` and the
residual ``sum_i w_i (x_i + b_O)``. Proximities per (source, head) term, head sum, per-layer normalization and
the layer sum are IFR's (``routes``), applied once to the span instead of once per sink.

What is explained (the original's defaults, ``llm_attr.calculate_ifr_multi_hop`` and
``ft_ifr_improve.LLMIFRAttributionBoth.calculate_ifr_multi_hop_both``):

* ``ifr_multi_hop``: sink span = hop span = the whole generation (EOS included), unweighted.
* ``ifr_multi_hop_both``: span = the generation without its EOS; stop tokens (text ``,`` ``.`` or whitespace)
  get sink weight 0 (if the span has any) and score 0 everywhere (user prompt and outputs).

Hop 0 gives E0 [T] (raw: sums over layers of per-layer shares, not renormalized). Hop h >= 1 re-explains the
span itself with sink weights E_{h-1}[span] (normalized), giving E_h. With r_0 = E0[span].sum() / E0.sum() and
r_h = r_{h-1} * E_h[span].sum() / E_h.sum(), the score is ``E0 * m + sum_h r_{h-1} E_h * m`` with m = 1
on positions before the span (prompt, chat template included) and 0 on and after it, times the stop-token
mask. Every output row the span explains carries that one vector (``SpanScores``); ``both`` leaves the rows
of stop tokens and of the EOS NaN.

Efficient protocol: one traced decoder pass per hop, attention rows recomputed from q/k ``sink_chunk_tokens``
sinks at a time, values projected ``chunk_tokens`` sources at a time: memory linear in the sequence, no
(span x sequence) tensor and a result of one vector per hop. The reference protocol (one forward keeping every
attention map, the original's fp16 accumulators) is in ``routing_reference``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longctx.attribution.inputs import AttributionInputs
from longctx.attribution.method import AttributionResult, MethodSpec, SpanScores, register
from longctx.attribution.methods.ifr import ChunkOptions
from longctx.attribution.methods.routing_reference import reference_ifr_multi_hop, reference_ifr_multi_hop_both
from longctx.attribution.routes import head_proximity_sum, layer_normalized, residual_proximity
from longctx.attribution.spans import SpanPlan, both_plan, multi_hop_plan
from longctx.attribution.tracing import LayerCapture, chunk_ranges, trace_layers
from longctx.options import check_fields, option


@dataclass(frozen=True)
class FlashTraceOptions(ChunkOptions):
    """IFR's chunk sizes plus the number of hops over the span."""

    n_hops: int = option(1, help="FlashTrace hops over the explained span (the original's default: 1)", minimum=0)

    def __post_init__(self):
        check_fields(self)


def span_aggregate(cap: LayerCapture, sinks: torch.Tensor, weights: torch.Tensor, sink_chunk: int):
    """Weighted span of sinks -> (aggregated attention rows a [H, n_src], y [d], residual r [d])."""
    sinks, weights = sinks.to(cap.x.device), weights.to(cap.x.device, torch.float32)
    n_src = int(sinks.max()) + 1
    agg = torch.zeros(cap.q.shape[0], n_src, device=cap.x.device)
    for s0, s1 in chunk_ranges(len(sinks), sink_chunk):
        agg += torch.einsum("hst,s->ht", cap.attention_rows(sinks[s0:s1], n_src), weights[s0:s1])
    return agg, weights @ cap.y[sinks], weights @ cap.residual(sinks)


def layer_span_scores(
    cap: LayerCapture, sinks: torch.Tensor, weights: torch.Tensor, sink_chunk: int, src_chunk: int
) -> torch.Tensor:
    """One layer's normalized token scores [n_src] for the weighted span of sinks."""
    agg, y, r = span_aggregate(cap, sinks, weights, sink_chunk)
    prox = torch.zeros(agg.shape[1], device=agg.device)
    for c0, c1 in chunk_ranges(agg.shape[1], src_chunk):
        prox[c0:c1] = head_proximity_sum(y[None], agg[:, None, c0:c1], cap.value_out(c0, c1))[0]
    return layer_normalized(prox, residual_proximity(y, r))


def span_ifr(
    model, input_ids: torch.Tensor, sinks: torch.Tensor, weights: torch.Tensor, sink_chunk: int, src_chunk: int
) -> torch.Tensor:
    """Span IFR scores [T] (per-layer shares summed over layers); zero-weight sinks are skipped, all-zero: 0."""
    keep = weights > 0
    total = torch.zeros(input_ids.shape[1])
    if not keep.any():
        return total
    sinks, weights = sinks[keep], weights[keep] / weights[keep].sum()

    def on_layer(_index: int, cap: LayerCapture) -> None:
        scores = layer_span_scores(cap, sinks, weights, sink_chunk, src_chunk)
        total[: scores.shape[0]] += scores.cpu()

    trace_layers(model, input_ids, on_layer)
    return total


def _share(scores: torch.Tensor, span: slice) -> float:
    total = float(scores.sum())
    return float(scores[span].sum()) / total if total > 0 else 0.0


def flashtrace(model, inputs: AttributionInputs, plan: SpanPlan, options: FlashTraceOptions):
    """Multi-hop FlashTrace (see the module docstring) -> (SpanScores, the hop ratios r_0, r_1, ...)."""
    chunks = (options.sink_chunk_tokens, options.chunk_tokens)
    sinks, span = torch.arange(plan.start, plan.end), slice(plan.start, plan.end)
    weights = torch.ones(len(sinks)) if plan.base_weights is None else plan.base_weights.float()
    scores = span_ifr(model, inputs.input_ids, sinks, weights, *chunks) * plan.keep
    m = plan.observation()
    result, hops, ratio = scores * m, [scores], _share(scores, span)
    ratios = [ratio]
    for _ in range(options.n_hops):
        mass = float(scores[span].sum())
        if mass <= 0 or ratio <= 0:
            scores = torch.zeros_like(scores)
        else:
            scores = span_ifr(model, inputs.input_ids, sinks, scores[span] / mass, *chunks) * plan.keep
        result += ratio * scores * m
        hops.append(scores)
        ratio *= _share(scores, span)
        ratios.append(ratio)
    return SpanScores(result, plan.rows, hops), ratios


def span_details(plan: SpanPlan | None, ratios: list[float], options: FlashTraceOptions) -> dict:
    """What a FlashTrace result records about its span (absolute positions, inclusive like the original's)."""
    details = {
        "row_semantics": "span: every explained output row carries the same vector over the sequence",
        "n_hops": options.n_hops,
        "thinking_ratios": ratios,
        "sink_chunk_tokens": options.sink_chunk_tokens,
        "chunk_tokens": options.chunk_tokens,
    }
    if plan is not None:
        details.update(
            sink_span_absolute=[plan.start, plan.end - 1],
            stop_tokens_zeroed=int((plan.keep == 0).sum()),
            rows_explained=int(plan.rows.sum()),
        )
    return details


def _run(model, inputs: AttributionInputs, plan: SpanPlan | None, options: FlashTraceOptions) -> AttributionResult:
    if plan is None:
        empty = SpanScores(torch.zeros(inputs.total), torch.zeros(inputs.n_gen, dtype=torch.bool))
        return AttributionResult(details=span_details(None, [], options), span=empty)
    scores, ratios = flashtrace(model, inputs, plan, options)
    return AttributionResult(details=span_details(plan, ratios, options), span=scores)


def ifr_multi_hop(model, tokenizer, inputs: AttributionInputs, options: FlashTraceOptions) -> AttributionResult:
    """FlashTrace over the whole generation (EOS included)."""
    return _run(model, inputs, multi_hop_plan(inputs), options)


def ifr_multi_hop_both(model, tokenizer, inputs: AttributionInputs, options: FlashTraceOptions) -> AttributionResult:
    """FlashTrace over the generation without EOS, stop tokens weighted and scored 0."""
    return _run(model, inputs, both_plan(tokenizer, inputs), options)


register(
    MethodSpec(
        "ifr_multi_hop", "FlashTrace", "routing", FlashTraceOptions, ifr_multi_hop, reference=reference_ifr_multi_hop
    )
)
register(
    MethodSpec(
        "ifr_multi_hop_both",
        "FlashTrace (both)",
        "routing",
        FlashTraceOptions,
        ifr_multi_hop_both,
        reference=reference_ifr_multi_hop_both,
    )
)
