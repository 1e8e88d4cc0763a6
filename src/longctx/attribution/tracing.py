"""Capture what IFR-style methods need from one decoder pass, layer by layer, without attention maps.

``trace_layers(model, ids, on_layer)`` runs the decoder once (no LM head) with forward hooks; as soon as a
layer's attention ends, ``on_layer(index, LayerCapture)`` gets its residual input and output, post-RoPE
queries and keys and values (GQA heads expanded) and the per-head output projection, in float32, and the
layer's tensors are freed after the callback. Attention rows are recomputed from q and k one chunk of
queries at a time (``LayerCapture.attention_rows`` / ``attention_block``), so nothing of size [L, H, T, T]
is ever stored. Works with any attention implementation: nothing is patched.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

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
