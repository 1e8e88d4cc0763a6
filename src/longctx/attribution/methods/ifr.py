"""Information Flow Routes (Ferrando & Voita, 2024): exact per-layer decomposition of attention outputs.

For layer l and sink position i the attention block writes ``y_i = x_i + attn(norm(x))_i``. By linearity

    y_i = sum_j sum_h c_ijh + r_i,   c_ijh = A[h,i,j] * W_O,h (W_V,h norm(x_j) + b_V,h),   r_i = x_i + b_O

with GQA key/value heads expanded to the query heads. The V bias travels with each source (the attention
row sums to 1, so it is exactly the share that source carries); the output bias b_O belongs to no source
and joins the residual term r_i. GPT-NeoX's parallel residual ``x + attn(ln1 x) + mlp(ln2 x)`` is
decomposed with ``y = x + attn(ln1 x)``: the MLP branch reads x, not the attention output, and moves no
information between positions, so it is left out of the routing step of that layer.

Token importance: proximity ``max(0, ||y_i||_1 - ||y_i - c_ij||_1)`` with ``c_ij = sum_h c_ijh`` (the token
route), the residual r_i competing as one more term; proximities are normalized per layer over sources +
residual and summed over layers. Layers are traced one at a time (``longctx.attribution.tracing``):
attention rows are recomputed from the post-RoPE queries and keys one chunk of sinks at a time, so memory
is O(T·d) plus one chunk of rows, never [L,H,T,T].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longctx.attribution.inputs import AttributionInputs
from longctx.attribution.method import AttributionResult, MethodSpec, register
from longctx.attribution.routes import proximity, residual_proximity
from longctx.attribution.tracing import LayerCapture, chunk_ranges, trace_layers
from longctx.options import check_fields, option


@dataclass(frozen=True)
class ChunkOptions:
    """Chunk sizes that bound the working set of the IFR-style methods (recorded with every result)."""

    chunk_tokens: int = option(128, help="source tokens projected per chunk (IFR, FlashTrace)", minimum=1)
    sink_chunk_tokens: int = option(32, help="sink (query) rows recomputed per chunk", minimum=1)

    def __post_init__(self):
        check_fields(self)


def layer_ifr_rows(cap: LayerCapture, sinks: torch.Tensor, sink_chunk: int, src_chunk: int) -> torch.Tensor:
    """Per-layer normalized token proximities [S, n_src] for each sink position (n_src = last sink + 1).

    Two passes over one chunk of attention rows at a time: the rows' log-normalizers, then, per source chunk,
    its projected values W_O,h v_hj (computed once) against every sink chunk that can see it.
    """
    sinks = sinks.to(cap.x.device)
    n_src = int(sinks.max()) + 1
    sink_ranges = list(chunk_ranges(len(sinks), sink_chunk))
    log_norm = torch.cat([cap.log_normalizers(sinks[s0:s1], n_src) for s0, s1 in sink_ranges], dim=1)
    out = torch.zeros(len(sinks), n_src, device=cap.x.device)
    for c0, c1 in chunk_ranges(n_src, src_chunk):
        values = cap.value_out(c0, c1)
        for s0, s1 in sink_ranges:
            rows = sinks[s0:s1]
            if int(rows.max()) < c0:  # every source of this chunk is in these sinks' future
                continue
            attn = cap.attention_block(rows, log_norm[:, s0:s1], c0, c1)
            out[s0:s1, c0:c1] = proximity(cap.y[rows], torch.einsum("hsc,hce->sce", attn, values))
    total = out.sum(-1) + residual_proximity(cap.y[sinks], cap.residual(sinks))
    return out / total.clamp_min(torch.finfo(out.dtype).tiny)[:, None]


def ifr_rows(model, input_ids: torch.Tensor, sinks: torch.Tensor, sink_chunk: int, src_chunk: int) -> torch.Tensor:
    """IFR token scores [S, T] for each sink position: per-layer normalized proximities summed over layers."""
    total = torch.zeros(len(sinks), input_ids.shape[1])

    def on_layer(_index: int, cap: LayerCapture) -> None:
        rows = layer_ifr_rows(cap, sinks, sink_chunk, src_chunk)
        total[:, : rows.shape[1]] += rows.cpu()

    trace_layers(model, input_ids, on_layer)
    return total


def ifr_all_positions(model, tokenizer, inputs: AttributionInputs, options: ChunkOptions) -> AttributionResult:
    """IFR for every output row g, with sink = the position predicting token g (prompt_len + g - 1)."""
    sinks = inputs.generation_positions() - 1
    scores = ifr_rows(model, inputs.input_ids, sinks, options.sink_chunk_tokens, options.chunk_tokens)
    details = {"sink_chunk_tokens": options.sink_chunk_tokens, "chunk_tokens": options.chunk_tokens}
    return AttributionResult(inputs.matrix_from_positions(scores), details)


register(MethodSpec("ifr_all_positions", "IFR (all positions)", "routing", ChunkOptions, ifr_all_positions))
