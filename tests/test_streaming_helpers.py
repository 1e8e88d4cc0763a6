"""Test helpers for the streaming study: tiny models from config and a slow, obviously-correct reference.

The reference follows the spec's definition literally: it stores every cached key un-rotated (undoing the
model's RoPE with its own float64 rotary maths), keeps the entries of the cache as a plain Python list of
text indices, and at every step rotates every key to its cache index ``0 … len-1`` with the query at
``len``; pruning re-derives the kept indices from the spec's rules.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, GPTNeoXConfig, LlamaConfig, Qwen3Config
from transformers.cache_utils import Cache, CacheLayerMixin

VOCAB = 97


def tiny_model(arch: str, seed: int = 0, max_positions: int = 512):
    """A 2-layer fp32 model built from config with sharp attention (large init) so evictions change NLLs."""
    common = dict(
        vocab_size=VOCAB,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=max_positions,
        initializer_range=0.35,
        tie_word_embeddings=False,
    )
    if arch == "gpt-neox":
        config = GPTNeoXConfig(
            hidden_size=32,
            intermediate_size=64,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
            **common,
        )
    elif arch == "llama":
        config = LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_key_value_heads=2,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            **common,
        )
    else:
        config = Qwen3Config(
            hidden_size=32,
            intermediate_size=64,
            num_key_value_heads=2,
            head_dim=16,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            **common,
        )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
    return model.eval()


def token_stream(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed))


def full_causal_nll(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=ids[None]).logits[0].double()
    return -torch.log_softmax(logits, -1)[:-1].gather(-1, ids[1:, None])[:, 0]


class _Rope64:
    """The model's RoPE in float64, written from its config (rotate-half layout, partial rotary dims)."""

    def __init__(self, config):
        head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        params = config.rope_parameters
        self.dims = int(head * params.get("partial_rotary_factor", 1.0))
        self.inv_freq = 1.0 / params["rope_theta"] ** (torch.arange(0, self.dims, 2, dtype=torch.float64) / self.dims)

    def rotate(self, keys: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        angles = positions.double()[:, None] * self.inv_freq[None]
        cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
        head = keys[..., : self.dims].double()
        half = self.dims // 2
        rotated = head * cos + torch.cat([-head[..., half:], head[..., :half]], -1) * sin
        return torch.cat([rotated, keys[..., self.dims :].double()], -1)


class _RefLayer(CacheLayerMixin):
    is_sliding = False

    def __init__(self, owner):
        super().__init__()
        self.owner, self.unrotated, self.vals = owner, [], []

    def lazy_initialization(self, key_states, value_states):
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        fed = torch.arange(key_states.shape[-2]) + self.owner.query_position
        self.unrotated += list(self.owner.rope.rotate(key_states, -fed).unbind(-2))
        self.vals += list(value_states.unbind(-2))
        keys = torch.stack(self.unrotated, -2)
        at_index = self.owner.rope.rotate(keys, torch.arange(len(self.unrotated)))
        return at_index.to(key_states.dtype), torch.stack(self.vals, -2)

    def get_seq_length(self):
        return len(self.vals)

    def get_mask_sizes(self, query_length):
        return len(self.vals) + query_length, 0

    def get_max_length(self):
        return -1


class ReferenceCache(Cache):
    def __init__(self, model):
        super().__init__(layers=[_RefLayer(self) for _ in range(model.config.num_hidden_layers)])
        self.rope, self.query_position = _Rope64(model.config), 0

    def keep(self, indices: list[int]) -> None:
        for layer in self.layers:
            layer.unrotated = [layer.unrotated[i] for i in indices]
            layer.vals = [layer.vals[i] for i in indices]


def spec_keep(length, S, C_soft, C_total, R, delta, B=0, policy="none"):
    """Kept cache indices after a forward, straight from the spec's words (None: no prune this step)."""
    if R == 0 or length - C_soft < R:
        return None
    target = C_soft if delta == 0 else max(length - delta, C_soft)
    target = min(target, C_total)
    recent = list(range(length - (target - S - B), length))
    dropped = list(range(S, recent[0]))
    refreshed = [dropped[int((i + 0.5) * len(dropped) / B)] for i in range(B)]
    middle = refreshed + recent if policy == "middle" else recent + refreshed
    return list(range(S)) + middle


def reference_nll(model, ids, *, S, prefill, C_soft, C_total, R, delta, B=0, policy="none"):
    """Per-token NLL (float64) and the cache length after every forward, by the literal definition."""
    cache, n = ReferenceCache(model), ids.numel()
    nll, lengths = [], []
    with torch.no_grad():
        logits = model(input_ids=ids[None, :prefill], past_key_values=cache).logits[0].double()
        nll += (
            -torch.log_softmax(logits, -1)[: min(prefill, n - 1)].gather(-1, ids[1 : prefill + 1, None])[:, 0]
        ).tolist()
        lengths.append(cache.get_seq_length())
        for t in range(prefill, n - 1):
            cache.query_position = cache.get_seq_length()
            out = model(
                input_ids=ids[None, t : t + 1],
                position_ids=torch.tensor([[cache.query_position]]),
                past_key_values=cache,
            )
            nll.append(float(-torch.log_softmax(out.logits[0, -1].double(), -1)[ids[t + 1]]))
            length = cache.get_seq_length()
            lengths.append(length)
            kept = spec_keep(length, S, C_soft, C_total, R, delta, B, policy)
            if kept is not None:
                cache.keep(kept)
    return torch.tensor(nll, dtype=torch.float64), lengths
