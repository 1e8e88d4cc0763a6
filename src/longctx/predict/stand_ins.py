"""What a prediction uses where the real asset is not on this machine: tokenizers and the masked LM.

Shapes, not values, decide memory and FLOPs, so the causal LM and the masked LM are meta models of their
architectures (configs from the local/offline files, else the transcribed ones in ``architectures``). The
text is tokenized by the model's own tokenizer when it is available offline, else by the artifact's tiny
byte-level BPE with a Qwen3-style chat template (``assets/tiny`` when built, else built once here and cached):
token counts then differ a little from the real tokenizer's (the prediction records which one it used).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from longctx.errors import UsageError

TINY_DIR = Path("assets/tiny")
CACHE_DIR = Path(os.environ.get("LONGCTX_CACHE", "~/.cache/longctx")).expanduser() / "predict-tokenizer"
MLM_CONFIGS = {"allenai/longformer-base-4096": "LONGFORMER_BASE_4096"}
# Words of Qwen3's chat template (with the original's "Context:...Query:" wrapper) that are one token each in
# Qwen's vocabulary: as added tokens the stand-in's template takes 18 tokens, like Qwen's.
QWEN3_TEMPLATE_WORDS = ("user", "assistant", "Context", "Query", "<think>", "</think>", "\n\n\n", "\n\n", "\n")
CAUSAL_ARCHS = {"Qwen/Qwen3-8B": "qwen3-8b", "EleutherAI/pythia-2.8b": "pythia-2.8b"}  # hub id -> architectures


def model_spec(spec: str) -> tuple[str, str]:
    """(spec whose config builds the meta model, what it is): the model's own config when it is here, else
    the transcribed config of the pinned checkpoint (``random:<arch>``: same architecture)."""
    from longctx.models import RANDOM_PREFIX, model_config

    if spec.startswith(RANDOM_PREFIX):
        return spec, spec
    try:
        model_config(spec)
        return spec, spec
    except (UsageError, OSError):
        if spec in CAUSAL_ARCHS:
            return f"{RANDOM_PREFIX}{CAUSAL_ARCHS[spec]}", f"transcribed config of {spec} (longctx.architectures)"
        raise


def causal_tokenizer(model: str, tokenizer: str | None):
    """(tokenizer, what it is): the model's own when available offline, else the stand-in."""
    from longctx.models import tokenizer_for

    try:
        return tokenizer_for(model, tokenizer), tokenizer or model
    except (UsageError, OSError):
        return stand_in_tokenizers()[0], "stand-in: the artifact's tiny byte-level BPE (Qwen3-style chat template)"


def mlm_tokenizer(spec: str):
    """(masked-LM tokenizer, what it is), like ``causal_tokenizer``."""
    from longctx.models import load_tokenizer, resolve_model_dir

    try:
        return load_tokenizer(resolve_model_dir(spec)[0]), spec
    except (UsageError, OSError):
        return stand_in_tokenizers()[1], "stand-in: the tiny BPE with RoBERTa specials"


@functools.cache
def stand_in_tokenizers():
    """(causal, masked-LM) tokenizers built on the tiny BPE (from ``assets/tiny`` when it exists)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from longctx.tiny import EOS, QWEN3_CHAT_TEMPLATE, build_tokenizer

    if (TINY_DIR / "tiny-qwen3" / "tokenizer.json").exists():
        tok = Tokenizer.from_file(str(TINY_DIR / "tiny-qwen3" / "tokenizer.json"))
    elif (CACHE_DIR / "tokenizer.json").exists():
        tok = Tokenizer.from_file(str(CACHE_DIR / "tokenizer.json"))
    else:
        tok = build_tokenizer(0)
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tok.save(str(CACHE_DIR / "tokenizer.json"))
    causal = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token="<pad>")
    causal.chat_template = QWEN3_CHAT_TEMPLATE
    causal.add_tokens(list(QWEN3_TEMPLATE_WORDS))
    mlm = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>",
        pad_token="<pad>", mask_token="<mask>", model_max_length=4096,
    )  # fmt: skip
    return causal, mlm


def mlm_config(spec: str):
    """The masked LM's config: local/offline files, else the transcribed architecture."""
    from transformers import AutoConfig, LongformerConfig

    from longctx import architectures
    from longctx.models import resolve_model_dir

    if spec in MLM_CONFIGS:
        return LongformerConfig(**getattr(architectures, MLM_CONFIGS[spec]))
    try:
        return AutoConfig.from_pretrained(resolve_model_dir(spec)[0], local_files_only=True)
    except (UsageError, OSError):
        raise UsageError(f"masked LM {spec!r}: no config here and no transcribed architecture") from None


@functools.lru_cache(maxsize=2)
def meta_masked_lm(spec: str):
    """The masked LM on meta tensors (fp32, eval, frozen), built once."""
    from transformers import AutoModelForMaskedLM

    with torch.device("meta"):
        model = AutoModelForMaskedLM.from_config(mlm_config(spec))
    return model.eval().requires_grad_(False)
