"""Loading models offline-first and describing exactly what was loaded.

``--model`` accepts a local Hugging Face directory, a hub id resolved from the offline cache (never
the network), or ``random:<arch>`` (a known architecture with seeded random weights, for the
timing profile: speed and memory do not depend on weight values).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from longctx.errors import UsageError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
RANDOM_PREFIX = "random:"
_SNAPSHOT_RE = re.compile(r"models--(?P<org>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<sha>[0-9a-f]{40})")


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    info: dict  # the ``inputs.model`` block of a result


def parse_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise UsageError(f"unknown --dtype {name!r}; choose one of {', '.join(DTYPES)}") from None


def apply_cuda_visible(cuda: str | None) -> None:
    """``--cuda 0,1``: restrict visible GPUs before CUDA initialises (the seed's convention)."""
    if cuda:
        if not re.fullmatch(r"\d+(,\d+)*", cuda):
            raise UsageError(f"--cuda must be a comma-separated list of GPU indices, got {cuda!r}")
        os.environ["CUDA_VISIBLE_DEVICES"] = cuda


def resolve_device(device: str | None) -> str:
    """``auto`` (or None) becomes cuda when a GPU is visible, else cpu; anything else must be a visible device."""
    from longctx.validate import validate_device

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return validate_device(device)


def resolve_model_dir(spec: str) -> tuple[Path, str]:
    """Map ``--model`` to a local directory and its revision; never touches the network."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UsageError(f"model directory {path} has no config.json")
        return path, local_revision(path)
    if path.exists() or spec.startswith((".", "/")):
        raise UsageError(f"model {spec!r}: not a model directory")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snap = Path(snapshot_download(spec, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise UsageError(
            f"model {spec!r} is not a local directory and not in the offline Hugging Face cache "
            f"(HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}); fetch it with "
            f"`longctx assets fetch` or pass a local directory ({type(exc).__name__})"
        ) from None
    return snap, local_revision(snap)


def local_revision(path: Path) -> str:
    """The commit sha for a hub-cache snapshot; else a content hash of config + weights (never empty)."""
    match = _SNAPSHOT_RE.search(str(path.resolve()))
    if match:
        return match.group("sha")
    digest = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.suffix in {".json", ".safetensors", ".bin"} and p.is_file())
    for file in files:
        digest.update(file.name.encode() + b"\0")
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def revision_of(spec: str, seed: int) -> str:
    """The revision a result records: hub commit, content hash of a local directory, or the random-init seed."""
    return f"random-init:seed={seed}" if spec.startswith(RANDOM_PREFIX) else resolve_model_dir(spec)[1]


def tokenizer_spec(model: str, tokenizer: str | None) -> str:
    """Where the tokenizer comes from: ``tokenizer`` or the model itself (random-weight models need one)."""
    spec = tokenizer or model
    if spec.startswith(RANDOM_PREFIX):
        raise UsageError(f"--model {model} has random weights and no tokenizer; pass --tokenizer DIR")
    return spec


@functools.cache
def tokenizer_for(model: str, tokenizer: str | None = None):
    """The tokenizer of a model spec, loaded once per process (plans describe many cells of one model)."""
    return load_tokenizer(resolve_model_dir(tokenizer_spec(model, tokenizer))[0])


def describe_model(
    model: str, *, tokenizer: str | None, dtype: str, device_map: object, seed: int = 0
) -> dict:
    """The ``inputs.model`` block of every result, built without loading weights."""
    tok = tokenizer_spec(model, tokenizer)
    return {
        "model_id": model,
        "model_revision": revision_of(model, seed),
        "tokenizer": tok,
        "tokenizer_revision": revision_of(tok, seed),
        "dtype": dtype,
        "device_map": device_map,
    }


def model_config(spec: str):
    """The model's transformers config, without weights (``random:<arch>`` from the transcribed configs)."""
    if spec.startswith(RANDOM_PREFIX):
        from longctx.architectures import RANDOM_ARCHS, make_config

        arch = spec[len(RANDOM_PREFIX) :]
        if arch not in RANDOM_ARCHS:
            raise UsageError(f"unknown random architecture {arch!r}; known: {', '.join(RANDOM_ARCHS)}")
        return make_config(arch)
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(resolve_model_dir(spec)[0], local_files_only=True)


def context_limit(spec: str) -> int | None:
    """The one context-limit rule: ``max_position_embeddings`` of the model's config (None when absent)."""
    return getattr(model_config(spec), "max_position_embeddings", None)


def eos_id(tokenizer, purpose: str) -> int:
    """The tokenizer's EOS id; ``purpose`` says in the error why it is needed."""
    if tokenizer.eos_token_id is None:
        raise UsageError(f"the tokenizer has no EOS token, which {purpose} needs")
    return int(tokenizer.eos_token_id)


def load_causal_lm(
    spec: str,
    *,
    dtype: str = "float32",
    device: str | None = "auto",
    cuda: str | None = None,
    tokenizer: str | None = None,
    seed: int = 0,
    attn_implementation: str | None = None,
) -> LoadedModel:
    """Load a causal LM (and its tokenizer) for evaluation: eval mode, parameters frozen.

    ``attn_implementation`` picks the attention kernel (``eager``, ``sdpa``, ...; None: transformers' default).
    """
    from transformers import AutoModelForCausalLM

    torch_dtype = parse_dtype(dtype)
    apply_cuda_visible(cuda)
    device = resolve_device(device)
    tok = tokenizer_for(spec, tokenizer)
    kernel = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if spec.startswith(RANDOM_PREFIX):
        model = random_model(spec, torch_dtype, device, seed, **kernel)
    else:
        device_map = "balanced" if cuda and "," in cuda else device
        model = AutoModelForCausalLM.from_pretrained(
            resolve_model_dir(spec)[0], dtype=torch_dtype, local_files_only=True, device_map=device_map, **kernel
        )
    model.eval()
    model.requires_grad_(False)
    device_map = getattr(model, "hf_device_map", None) or str(device)
    info = describe_model(spec, tokenizer=tokenizer, dtype=dtype, device_map=device_map, seed=seed)
    info.update(
        architecture=type(model).__name__,
        n_parameters=sum(p.numel() for p in model.parameters()),
        attn_implementation=model.config._attn_implementation,
    )
    return LoadedModel(model=model, tokenizer=tok, info=info)


def random_model(spec: str, dtype: torch.dtype, device: str, seed: int, **config_kwargs):
    """``random:<arch>`` with seeded random weights (``config_kwargs``: e.g. ``attn_implementation``)."""
    from transformers import AutoModelForCausalLM

    from longctx.architectures import RANDOM_ARCHS, make_config

    arch = spec[len(RANDOM_PREFIX) :]
    if arch not in RANDOM_ARCHS:
        raise UsageError(f"unknown random architecture {arch!r}; known: {', '.join(RANDOM_ARCHS)}")
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(make_config(arch), dtype=dtype, **config_kwargs)
    return model
