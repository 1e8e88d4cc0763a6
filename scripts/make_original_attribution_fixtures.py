#!/usr/bin/env python3
"""Regenerate tests/fixtures/original_attribution/ by running the ORIGINAL FlashTrace code on a tiny model.

Where the original code comes from: FlashTrace at commit 02ef4d3 (MIT licence, Copyright (c) 2026 Wenbo
Pan), kept read-only in this workspace at /work/shared/reference/flashtrace-02ef4d3. Its path is this
script's first argument; the script imports ``exp/exp1/run_time_curve.py`` and the modules it imports
(``llm_attr``, ``ifr_core``, ``ft_ifr_improve``, ``lrp_patches``, ``lrp_rules``, ``shared_utils``) from there
and copies none of their code. The project (src/, tests/) never imports the original; only this script runs it.

What it does, exactly as ``run_time_curve.py`` does for one cell (lines cited are of that file):

* prompt and target: ``build_prompt_to_length`` (l.163) tiles a short multi-sentence base text to
  ``--prompt-tokens`` ids and decodes; ``build_output_to_length`` (l.183) tiles " The answer is 42." to
  ``--output-tokens`` ids; ``estimate_model_lengths`` (l.214) and ``compute_batch_size`` (l.487) with the
  model's ``max_position_embeddings`` give the lengths and IG's batch size;
* each of the nine methods is built with ``make_attr_runner`` (l.381) with chunk_tokens=128 and
  sink_chunk_tokens=32 (the experiment's defaults) and its ``fn()`` is called once; the result's
  ``attribution_matrix`` (and, for the IFR family, its metadata vectors) is saved as returned.

The only departures from the experiment, all forced by this machine (no GPU, no network):

* the model is a tiny Qwen3 built from config with a fixed seed, fp32, ``attn_implementation="eager"``,
  on CPU (the experiment loads Qwen3-8B in fp16 with ``load_model_balanced``, l.236; fp16 on CPU is not
  used here so the fixtures are exact fp32 numbers); like l.264 the tokenizer's pad token is set to EOS;
* the tokenizer is the project's tiny byte-level BPE with its Qwen3-style chat template (from
  ``longctx models make-tiny DIR``: DIR/tiny-qwen3/tokenizer.json and chat_template.jinja), rewritten as a
  plain ``PreTrainedTokenizerFast`` config that both transformers 4.x (here) and 5.x (the project) load;
* ReAGent's masked LM: ``LLMPerturbationAttribution.__init__`` (llm_attr.py l.1482) downloads
  ``allenai/longformer-base-4096``; here its two ``from_pretrained`` calls are redirected to a tiny
  ``LongformerForMaskedLM`` built from config with a fixed seed (514 positions: the fixture's sequences are
  short, and the 4096-position table alone would exceed the fixture size budget) and a RoBERTa-style
  tokenizer (``<s> ... </s>``, ``<mask>``) on the same BPE. Every other line of the method runs as written;
* spaCy: ``en_core_web_sm`` cannot be downloaded here, so ``shared_utils`` falls back (its own ``except
  OSError`` branch) to ``spacy.blank("en")`` + ``sentencizer`` + its ``newline_cap_split`` component.

Scratch environment (the original needs transformers 4.x: ``lrp_patches`` replaces the module global
``ALL_ATTENTION_FUNCTIONS`` with a plain dict and patches ``eager_attention_forward``, which transformers 5
no longer calls that way). Exact commands used:

    python3 -m venv /tmp/attr-ref/venv
    /tmp/attr-ref/venv/bin/pip install torch==2.13.0 transformers==4.57.3 spacy==3.8.18 wordfreq==3.1.1 \\
        seaborn==0.13.2 networkx==3.6.1 matplotlib==3.11.2 tqdm==4.70.1 numpy==2.4.6 safetensors==0.8.0
    cd <worktree> && PYTHONPATH=$PWD/src .venv-or-main/bin/python -c \\
        "from longctx.tiny import make_tiny; make_tiny('/tmp/attr-ref/tiny', seed=0, train_steps=0)"
    OMP_NUM_THREADS=1 /tmp/attr-ref/venv/bin/python scripts/make_original_attribution_fixtures.py \\
        /work/shared/reference/flashtrace-02ef4d3 --tiny-dir /tmp/attr-ref/tiny

(``--tiny-dir`` is only needed the first time: later runs reuse the tokenizer files already in the
fixture directory.) Output: model/, tokenizer/, mlm/, case.json, outputs.safetensors, outputs.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

FIXTURE_DIR = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "original_attribution"
ORIGINAL_COMMIT = "02ef4d3"
SEED = 0
# Short multi-sentence text in the style of a RULER variable-tracking passage: several sentences and a
# newline followed by a capitalised word (exercises shared_utils' newline_cap_split).
BASE_TEXT = (
    "VAR ABCDE = 12345. The grass is green and the sky is blue.\n"
    "VAR FGHIJ = VAR ABCDE. Here we go, said the man. What are all the variables?"
)
TARGET_TEXT = " The answer is 42."  # run_time_curve.py --target_text default (l.126)
METHODS = (
    "IG",
    "perturbation_all",
    "attention_I_G",
    "perturbation_REAGENT",
    "ifr_all_positions",
    "perturbation_CLP",
    "ifr_multi_hop",
    "ifr_multi_hop_both",
    "attnlrp",
)  # DEFAULT_ATTRS order (l.50) with ifr_multi_hop_both inserted as in the published runs


def tiny_qwen3_config(tokenizer):
    """Tiny Qwen3: hidden 64, 2 layers, 4 query heads over 2 KV heads (GQA), q/k RMSNorm, untied head."""
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=128,
        hidden_act="silu",
        max_position_embeddings=2048,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        attention_bias=False,
        initializer_range=0.1,  # sharper than 0.02: non-uniform attention and next-token distributions
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        # not EOS: nn.Embedding zero-initialises the padding row, and IG's baseline is the EOS embedding
        pad_token_id=tokenizer.convert_tokens_to_ids("<pad>"),
    )


def tiny_longformer_config(mlm_tokenizer):
    from transformers import LongformerConfig

    return LongformerConfig(
        vocab_size=len(mlm_tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        attention_window=[16, 16],
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=mlm_tokenizer.pad_token_id,
        bos_token_id=mlm_tokenizer.bos_token_id,
        eos_token_id=mlm_tokenizer.eos_token_id,
    )


def write_tokenizers(tiny_dir: Path | None, out: Path) -> None:
    """tokenizer/ (causal, chat template) and mlm/ tokenizer files, from the project's tiny BPE (first run only)."""
    tok_dir, mlm_dir = out / "tokenizer", out / "mlm"
    if (tok_dir / "tokenizer.json").exists() and (mlm_dir / "tokenizer.json").exists():
        return
    if tiny_dir is None:
        sys.exit("no tokenizer in the fixture directory yet: pass --tiny-dir (from `longctx models make-tiny DIR`)")
    from tokenizers import Tokenizer, processors

    source = tiny_dir / "tiny-qwen3"
    tok_dir.mkdir(parents=True, exist_ok=True)
    mlm_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "tokenizer.json", tok_dir / "tokenizer.json")
    causal_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<pad>",
        "model_max_length": 2048,
        "chat_template": (source / "chat_template.jinja").read_text(),
    }
    (tok_dir / "tokenizer_config.json").write_text(json.dumps(causal_config, indent=2) + "\n")
    bpe = Tokenizer.from_file(str(source / "tokenizer.json"))
    bos, eos = bpe.token_to_id("<s>"), bpe.token_to_id("</s>")
    bpe.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    bpe.save(str(mlm_dir / "tokenizer.json"))
    mlm_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "cls_token": "<s>",
        "sep_token": "</s>",
        "pad_token": "<pad>",
        "mask_token": "<mask>",
        "model_max_length": 4096,
    }
    (mlm_dir / "tokenizer_config.json").write_text(json.dumps(mlm_config, indent=2) + "\n")


def build_models(out: Path):
    """Tiny causal LM and masked LM from config with fixed seeds, saved, then loaded back as the run uses them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LongformerForMaskedLM

    tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer")
    mlm_tokenizer = AutoTokenizer.from_pretrained(out / "mlm")
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(
        tiny_qwen3_config(tokenizer), torch_dtype=torch.float32, attn_implementation="eager"
    )
    model.save_pretrained(out / "model")
    torch.manual_seed(SEED + 1)
    LongformerForMaskedLM(tiny_longformer_config(mlm_tokenizer)).save_pretrained(out / "mlm")
    for extra in (out / "model" / "generation_config.json",):
        extra.unlink(missing_ok=True)
    # loaded like run_time_curve.load_model_balanced (l.256-265), but fp32 and on CPU
    model = AutoModelForCausalLM.from_pretrained(out / "model", torch_dtype=torch.float32, attn_implementation="eager")
    tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    mlm = LongformerForMaskedLM.from_pretrained(out / "mlm")
    return model, tokenizer, mlm, mlm_tokenizer


def import_original(root: Path):
    """run_time_curve.py as a module (it puts the repository root on sys.path and imports llm_attr)."""
    sys.path.insert(0, str(root))
    spec = importlib.util.spec_from_file_location("run_time_curve", root / "exp" / "exp1" / "run_time_curve.py")
    rtc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rtc)
    return rtc


def redirect_longformer(llm_attr, mlm, mlm_tokenizer) -> None:
    """LLMPerturbationAttribution.__init__'s hub downloads -> the tiny masked LM (the only code substitution)."""

    class TinyLongformerTokenizer:
        @staticmethod
        def from_pretrained(_name, *args, **kwargs):
            return mlm_tokenizer

    class TinyLongformerForMaskedLM:
        @staticmethod
        def from_pretrained(_name, *args, **kwargs):
            return mlm

    llm_attr.LongformerTokenizer = TinyLongformerTokenizer
    llm_attr.LongformerForMaskedLM = TinyLongformerForMaskedLM


def ifr_metadata(prefix: str, meta: dict, tensors: dict, info: dict) -> None:
    """The multi-hop internals: per-hop raw token totals [T], observation vectors [T], ratios."""
    ifr = meta["ifr"]
    raw = ifr["raw"]
    for hop, agg in enumerate(raw.raw_attributions):
        tensors[f"{prefix}.raw.hop{hop}.token_importance_total"] = agg.token_importance_total.float()
    for key in ("mask", "base", "sum", "avg"):
        tensors[f"{prefix}.raw.observation.{key}"] = raw.observation[key].float()
    for hop, vec in enumerate(raw.observation["per_hop"], start=1):
        tensors[f"{prefix}.raw.observation.per_hop{hop}"] = vec.float()
    keep = (
        "sink_span_generation",
        "sink_span_absolute",
        "thinking_span_generation",
        "thinking_span_absolute",
        "all_gen_span_generation",
        "all_gen_span_absolute",
        "n_hops",
        "renorm_threshold",
    )
    info[prefix] = {k: ifr[k] for k in keep if k in ifr}
    info[prefix]["thinking_ratios"] = [float(r) for r in ifr["thinking_ratios"]]
    info[prefix]["n_raw_hops"] = len(raw.raw_attributions)


def run(root: Path, out: Path, prompt_tokens: int, output_tokens: int) -> None:
    rtc = import_original(root)
    import llm_attr
    import shared_utils

    model, tokenizer, mlm, mlm_tokenizer = build_models(out)
    redirect_longformer(llm_attr, mlm, mlm_tokenizer)
    random.seed(42)  # main(), l.575-577
    np.random.seed(42)
    torch.manual_seed(42)

    prompt, actual_input = rtc.build_prompt_to_length(tokenizer, BASE_TEXT, prompt_tokens)
    target, actual_output = rtc.build_output_to_length(tokenizer, TARGET_TEXT, output_tokens)
    lens = rtc.estimate_model_lengths(tokenizer, prompt, target)
    max_ctx = model.config.max_position_embeddings
    batch_size = rtc.compute_batch_size(lens["total_tokens"], max_input_len=max_ctx or 200000)

    probe = llm_attr.LLMAttribution(model, tokenizer)
    probe.target_response(prompt, target)
    input_ids = torch.cat([probe.prompt_ids, probe.generation_ids], dim=1)
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits[0].float()
    user_text = "".join(probe.user_prompt_tokens)
    gen_text = "".join(probe.generation_tokens)
    case = {
        "source": f"flashtrace-{ORIGINAL_COMMIT} exp/exp1/run_time_curve.py (MIT), run by "
        "scripts/make_original_attribution_fixtures.py",
        "versions": {
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "spacy": __import__("spacy").__version__,
        },
        "spacy_pipeline": list(shared_utils.nlp.pipe_names),
        "base_text": BASE_TEXT,
        "target_base_text": TARGET_TEXT,
        "prompt_tokens_target": prompt_tokens,
        "output_tokens_target": output_tokens,
        "actual_input_tokens": actual_input,
        "actual_output_tokens": actual_output,
        "model_lengths": lens,
        "batch_size": batch_size,
        "max_position_embeddings": max_ctx,
        "chunk_tokens": 128,
        "sink_chunk_tokens": 32,
        "prompt": prompt,
        "target": target,
        "user_prompt": probe.user_prompt,
        "formatted_prompt": probe.prompt,
        "eos_token": tokenizer.eos_token,
        "eos_token_id": tokenizer.eos_token_id,
        "prompt_ids": probe.prompt_ids[0].tolist(),
        "user_prompt_ids": probe.user_prompt_ids[0].tolist(),
        "generation_ids": probe.generation_ids[0].tolist(),
        "input_ids": input_ids[0].tolist(),
        "user_prompt_indices": list(probe.user_prompt_indices),
        "chat_prompt_indices": list(probe.chat_prompt_indices),
        "prompt_tokens": probe.prompt_tokens,
        "user_prompt_tokens": probe.user_prompt_tokens,
        "generation_tokens": probe.generation_tokens,
        "user_prompt_sentences": shared_utils.create_sentences(user_text, tokenizer),
        "generation_sentences": shared_utils.create_sentences(gen_text, tokenizer),
        "n_user": len(probe.user_prompt_tokens),
        "n_gen": int(probe.generation_ids.shape[1]),
    }
    case["user_prompt_sentence_masks"] = shared_utils.create_sentence_masks(
        probe.user_prompt_tokens, case["user_prompt_sentences"]
    ).tolist()
    case["generation_sentence_masks"] = shared_utils.create_sentence_masks(
        probe.generation_tokens, case["generation_sentences"]
    ).tolist()

    tensors = {"forward.logits": logits.contiguous()}
    info: dict = {}
    for name in METHODS:
        fn = rtc.make_attr_runner(
            name,
            model=model,
            tokenizer=tokenizer,
            chunk_tokens=128,
            sink_chunk_tokens=32,
            batch_size=batch_size,
            prompt=prompt,
            target=target,
        )
        result = fn()
        tensors[f"{name}.attribution_matrix"] = result.attribution_matrix.float().contiguous()
        if name in ("ifr_multi_hop", "ifr_multi_hop_both"):
            ifr_metadata(name, result.metadata, tensors, info)
        if name == "ifr_all_positions":
            info[name] = {"sink_indices": list(result.metadata["ifr"]["sink_indices"])}
        print(f"{name}: {tuple(result.attribution_matrix.shape)}", flush=True)

    # Not timed by the experiment, saved for the project's own variants (see the notes):
    attention = llm_attr.LLMAttentionAttribution(model, tokenizer).calculate_attention_attribution(prompt, target)
    tensors["extra.attention_only.attribution_matrix"] = attention.attribution_matrix.float().contiguous()
    batched = llm_attr.LLMLRPAttribution(model, tokenizer).calculate_attnlrp_batched(prompt, target=target)
    tensors["extra.attnlrp_batched.attribution_matrix"] = batched.attribution_matrix.float().contiguous()

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "outputs.safetensors"))
    (out / "case.json").write_text(json.dumps(case, indent=1, ensure_ascii=False) + "\n")
    info["_keys"] = sorted(tensors)
    (out / "outputs.json").write_text(json.dumps(info, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("original", type=Path, help="path of flashtrace-02ef4d3 (the original code)")
    parser.add_argument("--tiny-dir", type=Path, default=None, help="output of `longctx models make-tiny DIR`")
    parser.add_argument("--out", type=Path, default=FIXTURE_DIR)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--output-tokens", type=int, default=30)
    args = parser.parse_args()
    if not (args.original / "exp" / "exp1" / "run_time_curve.py").exists():
        sys.exit(f"{args.original} is not the FlashTrace checkout (exp/exp1/run_time_curve.py missing)")
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    write_tokenizers(args.tiny_dir, args.out)
    run(args.original.resolve(), args.out, args.prompt_tokens, args.output_tokens)


if __name__ == "__main__":
    main()
