"""FlashTrace: IFR for a whole span of sink positions at once, by linearity, with multi-hop re-aggregation.

Span IFR. For sinks i with weights w_i (sum 1) the span's attention output is ``sum_i w_i y_i``; by linearity
its decomposition is ``c_j = sum_h a_hj W_O,h v_hj`` with the aggregated row ``a_hj = sum_i w_i A[h,i,j]`` and
residual ``r = sum_i w_i (x_i + b_O)`` (exactly what per-sink IFR sums to). Proximity, per-layer
normalization and the layer sum are those of IFR (``ifr.py``), applied once to the span instead of once
per sink: rows are aggregated ``sink_chunk_tokens`` at a time, sources projected ``chunk_tokens`` at a time.

Hops (``n_hops``). Hop 0 explains the target span (uniform weights over its sinks: the positions that
predict its tokens); its scores s^0 over all positions are normalized to sum 1. Hop h >= 1 explains the
reasoning (hop) span itself: m_h = share of s^{h-1} on the hop-span tokens, sink weights = s^{h-1} on those
tokens / m_h (sink = the token's own position: the node the mass landed on), giving normalized s^h. With
rho_h = m_1 ... m_h, the reported score is s^0 on output tokens and ``s^0 + sum_h rho_h s^h`` on prompt
tokens. The span explains all output rows jointly: every matrix row carries the same scores, masked
causally (NaN at output columns j >= g).

``ifr_multi_hop``: target = the last output sentence (EOS included), hop span = the output tokens before
it. ``ifr_multi_hop_both``: the same target and the whole output except EOS as hop span, with stop words
(tokens whose text is ``,`` ``.`` or whitespace) given zero sink weight and zero score.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longctx.attribution.inputs import AttributionInputs, token_strings
from longctx.attribution.method import AttributionResult, MethodSpec, register
from longctx.attribution.methods.ifr import ChunkOptions
from longctx.attribution.routes import proximity, residual_proximity
from longctx.attribution.sentences import sentence_spans
from longctx.attribution.tracing import LayerCapture, chunk_ranges, trace_layers
from longctx.errors import UsageError
from longctx.options import check_fields, option

STOP_WORDS = {",", "."}


@dataclass(frozen=True)
class FlashTraceOptions(ChunkOptions):
    """IFR's chunk sizes plus the number of hops over the reasoning span."""

    n_hops: int = option(1, help="FlashTrace hops over the reasoning span", minimum=0)

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
    """Per-layer normalized proximities [n_src] of every source for the weighted span of sinks."""
    agg, y, r = span_aggregate(cap, sinks, weights, sink_chunk)
    prox = torch.zeros(agg.shape[1], device=agg.device)
    for c0, c1 in chunk_ranges(agg.shape[1], src_chunk):
        contrib = torch.einsum("hc,hce->ce", agg[:, c0:c1], cap.value_out(c0, c1))
        prox[c0:c1] = proximity(y, contrib)
    return prox / (prox.sum() + residual_proximity(y, r)).clamp_min(torch.finfo(prox.dtype).tiny)


def span_ifr(
    model, input_ids: torch.Tensor, sinks: torch.Tensor, weights: torch.Tensor, sink_chunk: int, src_chunk: int
) -> torch.Tensor:
    """Span IFR scores [T] (per-layer normalized, summed over layers); zero-weight sinks are skipped."""
    keep = weights > 0
    if not keep.any():
        raise UsageError("FlashTrace: every sink of the span has zero weight (all stop words?)")
    sinks, weights = sinks[keep], weights[keep] / weights[keep].sum()
    total = torch.zeros(input_ids.shape[1])

    def on_layer(_index: int, cap: LayerCapture) -> None:
        scores = layer_span_scores(cap, sinks, weights, sink_chunk, src_chunk)
        total[: scores.shape[0]] += scores.cpu()

    trace_layers(model, input_ids, on_layer)
    return total


def _normalized(scores: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    scores = scores.masked_fill(zero, 0.0)
    return scores / scores.sum().clamp_min(torch.finfo(scores.dtype).tiny)


def flashtrace(
    model,
    inputs: AttributionInputs,
    target_weights: torch.Tensor,
    hop_tokens: torch.Tensor,
    zero: torch.Tensor,
    options: FlashTraceOptions,
) -> tuple[torch.Tensor, list[float]]:
    """Multi-hop FlashTrace scores over all positions [T] and the hop masses m_h (see the module docstring).

    ``target_weights`` [G]: weights of output rows (sink of row g = prompt_len + g - 1); ``hop_tokens``:
    output indices of the hop span; ``zero`` [T]: positions whose score is forced to 0 (an output row whose
    token is one of them gets zero weight).
    """
    chunks = (options.sink_chunk_tokens, options.chunk_tokens)
    rows = inputs.generation_positions() - 1
    weights = target_weights.float().masked_fill(zero[inputs.generation_positions()], 0.0)
    scores = _normalized(span_ifr(model, inputs.input_ids, rows, weights, *chunks), zero)
    result, rho, masses = scores.clone(), 1.0, []
    hop_positions = inputs.prompt_len + hop_tokens
    for _ in range(options.n_hops if len(hop_tokens) else 0):
        mass = float(scores[hop_positions].sum())
        masses.append(mass)
        if mass <= 0:
            break
        rho *= mass
        scores = _normalized(span_ifr(model, inputs.input_ids, hop_positions, scores[hop_positions], *chunks), zero)
        result[: inputs.prompt_len] += rho * scores[: inputs.prompt_len]
    return result, masses


def _last_sentence_start(tokenizer, inputs: AttributionInputs) -> int:
    """Output index where the last sentence (the answer) starts; EOS belongs to it."""
    spans = sentence_spans(tokenizer, inputs.generation_ids[: inputs.n_gen - int(inputs.eos_counts)])
    return spans[-1][0] if spans else 0


def _run(model, tokenizer, inputs: AttributionInputs, options: FlashTraceOptions, both: bool) -> AttributionResult:
    start = _last_sentence_start(tokenizer, inputs)
    target = torch.zeros(inputs.n_gen)
    target[start:] = 1.0
    n_hop = inputs.n_gen - int(inputs.eos_counts) if both else start
    hop_tokens = torch.arange(n_hop)
    zero = torch.zeros(inputs.total, dtype=torch.bool)
    if both:
        strings = token_strings(tokenizer, inputs.input_ids[0].tolist())
        zero = torch.tensor([s.strip() in STOP_WORDS or not s.strip() for s in strings])
    scores, masses = flashtrace(model, inputs, target, hop_tokens, zero, options)
    details = {
        "row_semantics": "span: every row holds the joint scores of the target span, masked causally",
        "target_rows": [start, inputs.n_gen],
        "hop_span_tokens": n_hop,
        "n_hops": options.n_hops,
        "hop_masses": masses,
        "stop_words_zeroed": int(zero.sum()),
        "sink_chunk_tokens": options.sink_chunk_tokens,
        "chunk_tokens": options.chunk_tokens,
    }
    return AttributionResult(inputs.matrix_from_positions(scores.expand(inputs.n_gen, -1)), details)


def ifr_multi_hop(model, tokenizer, inputs: AttributionInputs, options: FlashTraceOptions) -> AttributionResult:
    """FlashTrace: target = last output sentence, hop span = the output before it."""
    return _run(model, tokenizer, inputs, options, both=False)


def ifr_multi_hop_both(model, tokenizer, inputs: AttributionInputs, options: FlashTraceOptions) -> AttributionResult:
    """FlashTrace with stop words zeroed and the whole output except EOS as hop span."""
    return _run(model, tokenizer, inputs, options, both=True)


register(MethodSpec("ifr_multi_hop", "FlashTrace", "routing", FlashTraceOptions, ifr_multi_hop))
register(MethodSpec("ifr_multi_hop_both", "FlashTrace (both)", "routing", FlashTraceOptions, ifr_multi_hop_both))
