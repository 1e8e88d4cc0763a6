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
residual and summed over layers. Tensors are captured with forward hooks during one decoder pass and each
layer is processed inside its hook, then freed: attention rows are recomputed from the cached post-RoPE
queries and keys one chunk of sinks at a time, so memory is O(T·d) plus one chunk of rows, never [L,H,T,T].
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from longctx.attribution.base import AttributionConfig, AttributionInputs, AttributionResult, register_method
from longctx.errors import UsageError


@dataclass
class LayerCapture:
    """One layer's tensors (float32, on the layer's device) needed to decompose its attention block."""

    x: torch.Tensor  # [T, d] residual input of the block
    y: torch.Tensor  # [T, d] x + attention output (post-attention residual, MLP excluded)
    q: torch.Tensor  # [H, T, dh] post-RoPE queries
    k: torch.Tensor  # [H, T, dh] post-RoPE keys, GQA-expanded
    v: torch.Tensor  # [H, T, dh] values incl. V bias, GQA-expanded
    w_o: torch.Tensor  # [H, dh, d] per-head output projection
    b_o: torch.Tensor | None  # [d]
    scaling: float

    def residual(self, rows: torch.Tensor) -> torch.Tensor:
        """The residual term r_i = x_i + b_O for the given sink positions."""
        r = self.x[rows]
        return r if self.b_o is None else r + self.b_o

    def _scores(self, sinks: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """Scaled q·k scores [H, S, end-start] of the sinks against sources [start, end), -inf for future sources."""
        scores = torch.einsum("hsd,htd->hst", self.q[:, sinks], self.k[:, start:end]) * self.scaling
        future = torch.arange(start, end, device=scores.device)[None, :] > sinks.to(scores.device)[:, None]
        return scores.masked_fill(future[None], float("-inf"))

    def attention_rows(self, sinks: torch.Tensor, n_src: int | None = None) -> torch.Tensor:
        """Causal softmax attention rows A[h, i, :n_src] for the sink positions, recomputed from q and k."""
        return self._scores(sinks, 0, self.k.shape[1] if n_src is None else n_src).softmax(dim=-1)

    def log_normalizers(self, sinks: torch.Tensor, n_src: int) -> torch.Tensor:
        """log sum_j exp(score_ij) [H, S]: lets attention blocks be computed one source chunk at a time."""
        return self._scores(sinks, 0, n_src).logsumexp(dim=-1)

    def attention_block(self, sinks: torch.Tensor, log_norm: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """A[h, i, start:end] from the sinks' log-normalizers (equal to the softmax rows' slice)."""
        return (self._scores(sinks, start, end) - log_norm[..., None]).exp()

    def value_out(self, start: int, end: int) -> torch.Tensor:
        """u_hj = W_O,h v_hj for sources j in [start, end): [H, C, d]."""
        return torch.einsum("hcd,hde->hce", self.v[:, start:end], self.w_o)


def proximity(y: torch.Tensor, contrib: torch.Tensor) -> torch.Tensor:
    """max(0, ||y||_1 - ||y - c||_1) over the last dim; y [..., d] broadcasts against contrib [..., C, d]."""
    return (y.abs().sum(-1)[..., None] - (y[..., None, :] - contrib).abs().sum(-1)).clamp_min(0)


def residual_proximity(y: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return (y.abs().sum(-1) - (y - r).abs().sum(-1)).clamp_min(0)


def _rope_fn(attn) -> Callable:
    return sys.modules[type(attn).__module__].apply_rotary_pos_emb


def _heads(t: torch.Tensor, head_dim: int) -> torch.Tensor:
    """[1, T, n*dh] or [1, T, n, dh] -> [1, n, T, dh]."""
    return t.reshape(t.shape[0], t.shape[1], -1, head_dim).transpose(1, 2)


class _LayerHooks:
    """Forward hooks on one decoder layer that assemble a LayerCapture and hand it to ``on_layer``."""

    def __init__(self, index: int, layer, attn, on_layer: Callable[[int, LayerCapture], None]):
        self.index, self.layer, self.attn, self.on_layer = index, layer, attn, on_layer
        self.saved: dict[str, torch.Tensor] = {}
        if getattr(attn, "sliding_window", None):
            raise UsageError("IFR does not support sliding-window attention layers")
        self.handles = [
            layer.register_forward_pre_hook(self._layer_input, with_kwargs=True),
            attn.register_forward_pre_hook(self._attn_input, with_kwargs=True),
            attn.register_forward_hook(self._attn_output),
        ]
        if hasattr(attn, "q_proj"):  # Llama/Qwen family (q/k norm optional)
            self.handles += [
                getattr(attn, "q_norm", attn.q_proj).register_forward_hook(self._save("q")),
                getattr(attn, "k_norm", attn.k_proj).register_forward_hook(self._save("k")),
                attn.v_proj.register_forward_hook(self._save("v")),
            ]
            self.head_dim, self.out_proj = attn.head_dim, attn.o_proj
        elif hasattr(attn, "query_key_value"):  # GPT-NeoX
            self.handles.append(attn.query_key_value.register_forward_hook(self._save("qkv")))
            self.head_dim, self.out_proj = attn.head_size, attn.dense
        else:
            raise UsageError(f"IFR: unsupported attention module {type(attn).__name__}")

    def _save(self, key: str):
        def hook(_module, _args, output):
            self.saved[key] = output

        return hook

    def _layer_input(self, _module, args, kwargs):
        self.saved["x"] = args[0] if args else kwargs["hidden_states"]

    def _attn_input(self, _module, _args, kwargs):
        self.saved["rope"] = kwargs["position_embeddings"]

    def _qkv(self):
        dh = self.head_dim
        if "qkv" in self.saved:
            q, k, v = _heads(self.saved["qkv"], 3 * dh).chunk(3, dim=-1)
        else:
            q, k, v = (_heads(self.saved[key], dh) for key in ("q", "k", "v"))
        cos, sin = self.saved["rope"]
        q, k = _rope_fn(self.attn)(q, k, cos, sin)
        return q[0], k[0], v[0]

    def _attn_output(self, _module, _args, output):
        q, k, v = self._qkv()
        groups = q.shape[0] // k.shape[0]
        x = self.saved["x"][0].float()
        w = self.out_proj.weight.float()  # [d, H*dh]
        bias = self.out_proj.bias
        capture = LayerCapture(
            x=x,
            y=x + output[0][0].float(),
            q=q.float(),
            k=k.float().repeat_interleave(groups, dim=0),
            v=v.float().repeat_interleave(groups, dim=0),
            w_o=w.reshape(w.shape[0], q.shape[0], self.head_dim).permute(1, 2, 0),
            b_o=None if bias is None else bias.float(),
            scaling=float(self.attn.scaling),
        )
        self.saved.clear()
        self.on_layer(self.index, capture)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def decoder_layers(model) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
    """(decoder layer, its attention module) pairs of a supported causal LM."""
    layers = getattr(model.base_model, "layers", None)
    if layers is None:
        raise UsageError(f"IFR: unsupported model {type(model).__name__} (no decoder layers found)")
    pairs = []
    for layer in layers:
        attn = getattr(layer, "self_attn", None) or getattr(layer, "attention", None)
        if attn is None:
            raise UsageError(f"IFR: unsupported decoder layer {type(layer).__name__}")
        pairs.append((layer, attn))
    return pairs


def trace_layers(model, input_ids: torch.Tensor, on_layer: Callable[[int, LayerCapture], None]) -> None:
    """One decoder pass (no LM head); ``on_layer(index, capture)`` runs as soon as each layer's attention ends."""
    hooks = [_LayerHooks(i, layer, attn, on_layer) for i, (layer, attn) in enumerate(decoder_layers(model))]
    try:
        with torch.no_grad():
            device = model.get_input_embeddings().weight.device
            model.base_model(input_ids=input_ids.to(device), use_cache=False)
    finally:
        for hook in hooks:
            hook.remove()


def chunk_ranges(n: int, size: int):
    """[start, end) ranges of at most ``size`` covering range(n)."""
    for start in range(0, n, max(1, size)):
        yield start, min(n, start + max(1, size))


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


@register_method("ifr_all_positions")
def ifr_all_positions(model, tokenizer, inputs: AttributionInputs, config: AttributionConfig) -> AttributionResult:
    """IFR for every output row g, with sink = the position predicting token g (prompt_len + g - 1)."""
    sinks = inputs.generation_positions() - 1
    scores = ifr_rows(model, inputs.input_ids, sinks, config.sink_chunk_tokens, config.chunk_tokens)
    details = {"sink_chunk_tokens": config.sink_chunk_tokens, "chunk_tokens": config.chunk_tokens}
    return AttributionResult(inputs.matrix_from_positions(scores), "ifr_all_positions", details)
