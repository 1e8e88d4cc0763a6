#!/usr/bin/env python3
"""Run the ORIGINAL streaming study's pruning wrapper and decode loop on a tiny GPT-NeoX; save what they score.

Where the code comes from (GPL-3.0, see the LICENSE beside it; it is run here, never copied into the project):
  * ``streaming_llm/model.py`` (StreamingLLMWrapper) and ``experiments/eval_utils.py`` (decode loop) of the
    original repository at commit 3cb8e4b, the commit its published result files record
    (development tree: /work/shared/reference/cs3602-3cb8e4b);
  * ``streaming_llm/kv_cache.py`` and ``streaming_llm/rope_utils.py``, which that commit's copy does not carry,
    from its final commit 254e749 (/work/shared/reference/cs3602-254e749); model.py of 3cb8e4b imports
    ``StreamingKVCache``, ``rerotate_keys``, ``build_rotation_cache`` and ``apply_rotary_shift_inplace`` from them.

It needs the original's environment, not the project's (transformers 4.57.3: the Cache API with
``layers[i].keys``), so it runs in a scratch venv:

    python3 -m venv /tmp/stream-ref/venv
    /tmp/stream-ref/venv/bin/pip install torch==2.13.0 transformers==4.57.3
    /tmp/stream-ref/venv/bin/python scripts/make_original_streaming_fixtures.py \\
        --original /work/shared/reference/cs3602-3cb8e4b --helpers /work/shared/reference/cs3602-254e749 \\
        --out tests/fixtures/original_streaming

Writes ``model.safetensors`` (the tiny model's weights, fp32) and ``original_streaming.json``: the model config
(in the original's and the project's transformers spelling), the token stream, and per run the knobs, the
original's PPL, its per-token NLL in scoring order (x_1 … x_{N-1}) and the wrapper's prune events and cache
lengths. Everything runs in fp32 on CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import shutil
import sys
import tempfile
import types
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

SEED = 1234
N_TOKENS = 160
VOCAB = 128
# The original wrapper reads rotary_ndims from the attention module and inv_freq from gpt_neox.rotary_emb.
CONFIG_4_57 = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    hidden_act="gelu",
    rotary_pct=0.5,
    rotary_emb_base=10000,
    max_position_embeddings=2048,
    layer_norm_eps=1e-5,
    use_parallel_residual=True,
    tie_word_embeddings=False,
    attention_bias=True,
)
# The same model in the project's transformers (5.x) spelling.
CONFIG_PROJECT = {
    **{k: v for k, v in CONFIG_4_57.items() if k not in ("rotary_pct", "rotary_emb_base")},
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
}
# Budgets small enough that a 160-token stream prunes many times. cap_total = n_sink + window + cache_slack
# (the original's max_cache_size: prefill length and recompute window).
RUNS = [
    dict(id="recompute", method="recompute", n_sink=0, window=32, compress_every=1, cache_slack=0, max_drop=0),
    dict(id="strict", method="start_recent", n_sink=4, window=28, compress_every=1, cache_slack=0, max_drop=0),
    dict(id="lazy_R8", method="lazy", n_sink=4, window=28, compress_every=8, cache_slack=0, max_drop=0),
    dict(id="lazy_R8_delta4", method="lazy", n_sink=4, window=28, compress_every=8, cache_slack=0, max_drop=4),
    dict(id="lazy_R8_sigma8", method="lazy", n_sink=4, window=20, compress_every=8, cache_slack=8, max_drop=0),
    dict(id="lazy_R8_sigma8_delta4", method="lazy", n_sink=4, window=20, compress_every=8, cache_slack=8, max_drop=4),
    dict(id="lazy_R4_sigma8", method="lazy", n_sink=4, window=20, compress_every=4, cache_slack=8, max_drop=0),
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--original", type=Path, required=True, help="checkout of the original at 3cb8e4b")
    parser.add_argument("--helpers", type=Path, required=True, help="checkout at 254e749 (kv_cache.py, rope_utils.py)")
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args()


def load_original(original: Path, helpers: Path, scratch: Path):
    """Import the original ``streaming_llm`` package and ``eval_utils`` module from a scratch copy."""
    pkg = scratch / "streaming_llm"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    shutil.copy(original / "streaming_llm" / "model.py", pkg / "model.py")
    for name in ("kv_cache.py", "rope_utils.py"):
        shutil.copy(helpers / "streaming_llm" / name, pkg / name)
    sys.path.insert(0, str(scratch))
    from streaming_llm.kv_cache import StreamingKVCache  # noqa: F401  (import check)
    from streaming_llm.model import StreamingLLMWrapper

    if "datasets" not in sys.modules:  # eval_utils imports load_dataset at module level; unused here
        sys.modules["datasets"] = types.SimpleNamespace(load_dataset=None)
    spec = importlib.util.spec_from_file_location("original_eval_utils", original / "experiments" / "eval_utils.py")
    eval_utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eval_utils)
    return StreamingLLMWrapper, eval_utils


def make_model() -> GPTNeoXForCausalLM:
    """The tiny model with seeded weights drawn here (not transformers' init), scaled so attention is peaky."""
    model = GPTNeoXForCausalLM(GPTNeoXConfig(**CONFIG_4_57)).eval()
    gen = torch.Generator().manual_seed(SEED)
    state = {}
    for name, tensor in sorted(model.state_dict().items()):
        noise = torch.randn(tensor.shape, generator=gen, dtype=torch.float32)
        if name.endswith("layernorm.weight") or name.endswith("layer_norm.weight"):
            value = 1.0 + 0.1 * noise
        elif tensor.dim() == 1:
            value = 0.1 * noise
        elif "embed_in" in name:
            value = noise
        elif "embed_out" in name:
            value = noise * (0.5 / math.sqrt(tensor.shape[1]))
        else:
            value = noise * (2.0 / math.sqrt(tensor.shape[1]))
        state[name] = value.contiguous()
    model.load_state_dict(state, strict=True)
    return model


class LossRecorder:
    """Stands in for ``torch.nn.functional`` inside eval_utils: records per-token NLL of every cross_entropy."""

    def __init__(self):
        self.nll: list[float] = []

    def __getattr__(self, name):
        return getattr(torch.nn.functional, name)

    def cross_entropy(self, logits, target, **kwargs):
        per_token = torch.nn.functional.cross_entropy(logits, target, reduction="none")
        self.nll.extend(float(v) for v in per_token.reshape(-1))
        return torch.nn.functional.cross_entropy(logits, target, **kwargs)


def record_updates(wrapper) -> list[dict]:
    """Wrap ``wrapper.update`` to log every call: cache length before/after and the prune event, if any."""
    log: list[dict] = []
    original_update = wrapper.update

    def update(past_key_values):
        before = past_key_values.layers[0].keys.shape[2]
        original_update(past_key_values)
        event = wrapper._last_prune
        log.append(
            {
                "len_before": int(before),
                "len_after": int(past_key_values.layers[0].keys.shape[2]),
                "prune": None if event is None else {k: int(v) for k, v in event.items()},
            }
        )

    wrapper.update = update
    return log


def run_one(spec: dict, model, ids: torch.Tensor, StreamingLLMWrapper, eval_utils) -> dict:
    cap_total = spec["n_sink"] + spec["window"] + spec["cache_slack"]
    recorder = LossRecorder()
    eval_utils.F = recorder
    wrapper, updates = None, None
    if spec["method"] != "recompute":
        wrapper = StreamingLLMWrapper(
            model=model,
            n_sink=spec["n_sink"],
            window_size=spec["window"],
            compress_every=spec["compress_every"],
            max_drop=spec["max_drop"],
            cache_slack=spec["cache_slack"],
        )
        updates = record_updates(wrapper)
    result = eval_utils.compute_perplexity(
        model=model,
        encoded_dataset=ids,
        device=torch.device("cpu"),
        max_length=cap_total,
        stride=max(1, cap_total // 2),
        use_streaming=wrapper is not None,
        streaming_wrapper=wrapper,
        max_cache_size=cap_total,
    )
    eval_utils.F = torch.nn.functional
    nll = recorder.nll
    assert len(nll) == ids.shape[1] - 1, (spec["id"], len(nll))
    return {
        **spec,
        "cap_total": cap_total,
        "cap_soft": spec["n_sink"] + spec["window"],
        "ppl": result.perplexity,
        "decode_tokens": result.decode_tokens,
        "nll": nll,
        "updates": updates,
    }


def main() -> None:
    args = parse_args()
    torch.manual_seed(SEED)
    model = make_model()
    ids = torch.randint(0, VOCAB, (1, N_TOKENS), generator=torch.Generator().manual_seed(SEED + 1))
    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if "inv_freq" not in k}, str(weights))
    with tempfile.TemporaryDirectory(prefix="orig-streaming-") as scratch:
        StreamingLLMWrapper, eval_utils = load_original(args.original, args.helpers, Path(scratch))
        with torch.no_grad():
            runs = [run_one(spec, model, ids, StreamingLLMWrapper, eval_utils) for spec in RUNS]
    record = {
        "provenance": {
            "wrapper": "streaming_llm/model.py @ 3cb8e4b (original repository, GPL-3.0)",
            "decode_loop": "experiments/eval_utils.py @ 3cb8e4b: compute_perplexity(max_cache_size=cap_total)",
            "helpers": "streaming_llm/kv_cache.py, streaming_llm/rope_utils.py @ 254e749",
            "script": "scripts/make_original_streaming_fixtures.py",
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "device": "cpu",
            "dtype": "float32",
        },
        "model": {
            "class": "GPTNeoXForCausalLM",
            "config_transformers_4_57": CONFIG_4_57,
            "config": CONFIG_PROJECT,
            "weights": weights.name,
            "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
            "renames_for_config": {"embed_out.weight": "lm_head.weight"},  # transformers 5 names the LM head lm_head
            "init": f"make_model(): torch.Generator seed {SEED}, state_dict keys in sorted order",
        },
        "token_ids": ids[0].tolist(),
        "runs": runs,
    }
    out = args.out / "original_streaming.json"
    out.write_text(json.dumps(record, separators=(",", ":")) + "\n")
    for run in runs:
        prunes = sum(1 for u in run["updates"] or [] if u["prune"])
        print(f"{run['id']:24s} ppl={run['ppl']:.6f} decode_tokens={run['decode_tokens']} prunes={prunes}")
    print(f"wrote {out} and {weights}")


if __name__ == "__main__":
    main()
