"""attention x IG: Integrated Gradients multiplied elementwise by the last layer's head-averaged attention.

Row g uses the attention row of the position that predicts output g (prompt_len + g - 1). The attention is
recomputed from the last layer's post-RoPE queries and keys captured with forward hooks (IFR's capture, no
patching, any attention implementation), one chunk of ``sink_chunk_tokens`` rows at a time, so the model
never materializes attention maps of all layers (output_attentions would keep [L, H, T, T]).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longctx.attribution.inputs import AttributionInputs
from longctx.attribution.method import AttributionResult, MethodSpec, register
from longctx.attribution.methods.gradient_reference import attention_ig_reference
from longctx.attribution.methods.ig import IGOptions, ig_position_scores
from longctx.attribution.tracing import LayerCapture, chunk_ranges, decoder_layers, trace_layers
from longctx.options import check_fields, option


@dataclass(frozen=True)
class AttentionIGOptions(IGOptions):
    """IG settings plus the chunk of attention rows recomputed at a time."""

    sink_chunk_tokens: int = option(32, help="sink (query) rows recomputed per chunk", minimum=1)

    def __post_init__(self):
        check_fields(self)


def last_layer_attention_rows(model, input_ids: torch.Tensor, rows: torch.Tensor, chunk: int) -> torch.Tensor:
    """Head-averaged last-layer attention [len(rows), T] (float32, CPU) for the given query positions."""
    last = len(decoder_layers(model)) - 1
    out = torch.zeros(len(rows), input_ids.shape[1])

    def on_layer(index: int, cap: LayerCapture) -> None:
        if index != last:
            return
        for start, end in chunk_ranges(len(rows), chunk):
            out[start:end] = cap.attention_rows(rows[start:end].to(cap.q.device)).mean(0).cpu()

    trace_layers(model, input_ids, on_layer)
    return out


def attention_ig(model, tokenizer, inputs: AttributionInputs, options: AttentionIGOptions) -> AttributionResult:
    """IG scores times the predicting position's last-layer, head-averaged attention row, per output token."""
    ig_scores, details = ig_position_scores(model, tokenizer, inputs, options)
    predicting = inputs.generation_positions() - 1
    attention = last_layer_attention_rows(model, inputs.input_ids, predicting, options.sink_chunk_tokens)
    details = {**details, "attention": "last layer, head-averaged, row of the predicting position"}
    return AttributionResult(inputs.matrix_from_positions(ig_scores * attention), details)


register(
    MethodSpec(
        "attention_I_G", "Attention×IG", "gradient", AttentionIGOptions, attention_ig, reference=attention_ig_reference
    )
)
