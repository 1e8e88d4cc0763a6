"""Information Flow Routes (Ferrando & Voita, 2024) for every output token: ``ifr_all_positions``.

For layer l and sink position i the attention block writes ``y_i = x_i + attn(norm(x))_i``. By linearity

    y_i = sum_j sum_h c_ijh + r_i,   c_ijh = A[h,i,j] * W_O,h (W_V,h norm(x_j) + b_V,h),   r_i = x_i + b_O

with GQA key/value heads expanded to the query heads. The V bias travels with each source (the attention
row sums to 1, so it is exactly the share that source carries); the output bias b_O belongs to no source
and joins the residual term r_i. GPT-NeoX's parallel residual ``x + attn(ln1 x) + mlp(ln2 x)`` is
decomposed with ``y = x + attn(ln1 x)``: the MLP branch reads x, not the attention output, and moves no
information between positions, so it is left out of the routing step of that layer.

Token importance (``longctx.attribution.routes``): every (source j, head h) term gets its proximity to y_i,
the token's score is their sum over heads, the residual competes as one more term, scores are normalized
per layer and summed over layers. Sinks are the output tokens' own positions (row g = position
prompt_len + g, as in the original's ``calculate_ifr_for_all_positions``): row g covers the user prompt and
the outputs k <= g (the sink itself included) and is 0, not NaN, at k > g.

Efficient protocol: one decoder pass traced layer by layer (``longctx.attribution.tracing``); attention rows
are recomputed from post-RoPE queries and keys one chunk of sinks at a time and source values projected one
chunk at a time, so besides the [G, n_user + G] result (quadratic by definition) memory is linear in the
sequence: never [L, H, T, T] maps, never a [G, T] accumulator. The reference protocol is in
``routing_reference``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longctx.attribution.inputs import AttributionInputs
from longctx.attribution.method import AttributionResult, MethodSpec, register
from longctx.attribution.methods.routing_reference import reference_ifr_all_positions
from longctx.attribution.routes import head_proximity_sum, layer_normalized, residual_proximity
from longctx.attribution.tracing import LayerCapture, chunk_ranges, trace_layers
from longctx.options import check_fields, option

ROW_SEMANTICS = "row g: IFR of sink position prompt_len + g (the output token's own position); 0 at outputs k > g"


@dataclass(frozen=True)
class ChunkOptions:
    """Chunk sizes that bound the working set of the IFR-style methods (recorded with every result)."""

    chunk_tokens: int = option(128, help="source tokens projected per chunk (IFR, FlashTrace)", minimum=1)
    sink_chunk_tokens: int = option(32, help="sink (query) rows recomputed per chunk", minimum=1)

    def __post_init__(self):
        check_fields(self)


def sink_chunk_rows(cap: LayerCapture, sinks: torch.Tensor, src_chunk: int) -> torch.Tensor:
    """One layer's normalized token scores [S, last sink + 1] of a chunk of sinks, one source chunk at a time."""
    n_src = int(sinks.max()) + 1
    log_norm = cap.log_normalizers(sinks, n_src)
    y = cap.y[sinks]
    prox = torch.zeros(len(sinks), n_src, device=y.device)
    for c0, c1 in chunk_ranges(n_src, src_chunk):
        attn = cap.attention_block(sinks, log_norm, c0, c1)
        prox[:, c0:c1] = head_proximity_sum(y, attn, cap.value_out(c0, c1))
    return layer_normalized(prox, residual_proximity(y, cap.residual(sinks)))


def add_layer_rows(cap: LayerCapture, inputs: AttributionInputs, out: torch.Tensor, sink_chunk: int, src_chunk: int):
    """Add one layer's scores of every output row into ``out`` [G, n_user + G] (user columns, output columns)."""
    sinks = inputs.generation_positions().to(cap.x.device)
    u0, u1 = inputs.user_span
    for s0, s1 in chunk_ranges(len(sinks), sink_chunk):
        rows = sink_chunk_rows(cap, sinks[s0:s1], src_chunk).to(out.device)
        n_out = rows.shape[1] - inputs.prompt_len
        out[s0:s1, : inputs.n_user] += rows[:, u0:u1]
        out[s0:s1, inputs.n_user : inputs.n_user + n_out] += rows[:, inputs.prompt_len :]


def ifr_all_positions(model, tokenizer, inputs: AttributionInputs, options: ChunkOptions) -> AttributionResult:
    """IFR for every output row g, with sink = the output token's own position (prompt_len + g)."""
    device = model.get_input_embeddings().weight.device
    out = torch.zeros(inputs.n_gen, inputs.n_user + inputs.n_gen, device=device)

    def on_layer(_index: int, cap: LayerCapture) -> None:
        add_layer_rows(cap, inputs, out, options.sink_chunk_tokens, options.chunk_tokens)

    trace_layers(model, inputs.input_ids, on_layer)
    details = {
        "row_semantics": ROW_SEMANTICS,
        "sink_positions": [inputs.prompt_len, inputs.total - 1],
        "sink_chunk_tokens": options.sink_chunk_tokens,
        "chunk_tokens": options.chunk_tokens,
    }
    return AttributionResult(out.cpu(), details)


register(
    MethodSpec(
        "ifr_all_positions",
        "IFR (all positions)",
        "routing",
        ChunkOptions,
        ifr_all_positions,
        reference=reference_ifr_all_positions,
    )
)
