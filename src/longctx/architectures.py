"""Model architectures as facts in code: the real ones (for random-weight timing) and the tiny smoke ones.

The real configs are transcribed from the pinned checkpoints' ``config.json`` so the timing
profile measures exactly the paper's shapes without needing the weights.
"""

from __future__ import annotations

from transformers import GPTNeoXConfig, LongformerConfig, Qwen3Config

# EleutherAI/pythia-2.8b config.json (rotary_pct 0.25 -> partial_rotary_factor).
PYTHIA_2_8B = dict(
    vocab_size=50304,
    hidden_size=2560,
    num_hidden_layers=32,
    num_attention_heads=32,
    intermediate_size=10240,
    hidden_act="gelu",
    max_position_embeddings=2048,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
    layer_norm_eps=1e-5,
    use_parallel_residual=True,
    tie_word_embeddings=False,
    bos_token_id=0,
    eos_token_id=0,
    attention_bias=True,
)

# Qwen/Qwen3-8B config.json.
QWEN3_8B = dict(
    vocab_size=151936,
    hidden_size=4096,
    num_hidden_layers=36,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    intermediate_size=12288,
    hidden_act="silu",
    max_position_embeddings=40960,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
    attention_bias=False,
    bos_token_id=151643,
    eos_token_id=151645,
)

# allenai/longformer-base-4096 config.json: ReAGent's masked LM (fp32, 148.7M parameters).
LONGFORMER_BASE_4096 = dict(
    vocab_size=50265,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    hidden_act="gelu",
    attention_window=[512] * 12,
    max_position_embeddings=4098,
    type_vocab_size=1,
    layer_norm_eps=1e-5,
    bos_token_id=0,
    pad_token_id=1,
    eos_token_id=2,
    sep_token_id=2,
)

# Tiny smoke models: same families and the same structural quirks (partial rotary; GQA + q/k norm).
TINY_VOCAB = 1024
TINY_GPT_NEOX = dict(
    vocab_size=TINY_VOCAB,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=256,
    hidden_act="gelu",
    max_position_embeddings=2048,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
    layer_norm_eps=1e-5,
    use_parallel_residual=True,
    tie_word_embeddings=False,
    attention_bias=True,
)
TINY_QWEN3 = dict(
    vocab_size=TINY_VOCAB,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    intermediate_size=128,
    hidden_act="silu",
    max_position_embeddings=2048,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
    attention_bias=False,
)
# Stands in for allenai/longformer-base-4096 (ReAGent's masked LM): same class, same 4096-token limit.
TINY_LONGFORMER = dict(
    vocab_size=TINY_VOCAB,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    attention_window=[16, 16],
    max_position_embeddings=4098,
    type_vocab_size=1,
)

RANDOM_ARCHS = {
    "pythia-2.8b": (GPTNeoXConfig, PYTHIA_2_8B),
    "qwen3-8b": (Qwen3Config, QWEN3_8B),
    "tiny-gpt-neox": (GPTNeoXConfig, TINY_GPT_NEOX),
    "tiny-qwen3": (Qwen3Config, TINY_QWEN3),
}


def make_config(name: str, **overrides):
    """A transformers config for one of the known architectures (``RANDOM_ARCHS`` keys)."""
    cls, params = RANDOM_ARCHS[name]
    return cls(**{**params, **overrides})


def tiny_mlm_config(**overrides) -> LongformerConfig:
    return LongformerConfig(**{**TINY_LONGFORMER, **overrides})
