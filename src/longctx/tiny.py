"""`longctx models make-tiny DIR`: the smoke profile's models and tokenizer, built here, no downloads.

Writes ``DIR/tiny-gpt-neox`` (partial rotary, like Pythia), ``DIR/tiny-qwen3`` (GQA + q/k norm,
with a Qwen3-style chat template), ``DIR/tiny-mlm`` (a Longformer masked LM standing in for
ReAGent's) and the byte-level BPE tokenizer they share, trained on the artifact's synthetic text.
The causal models get a short, seeded, single-threaded training run on synthetic text so the smoke
numbers (PPL, attention sinks, attributions) are not those of a uniform random model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, LongformerForMaskedLM, PreTrainedTokenizerFast

from longctx.architectures import TINY_VOCAB, make_config, tiny_mlm_config
from longctx.data.synthetic import synthetic_text

EOS = "<|endoftext|>"
SPECIAL_TOKENS = [EOS, "<|im_start|>", "<|im_end|>", "<pad>", "<mask>", "<s>", "</s>"]
# Qwen3's template with enable_thinking=False, reduced to what the attribution study uses.
QWEN3_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}"
)
MARKER = "longctx_tiny.json"
TINY_MODEL_NAMES = ("tiny-gpt-neox", "tiny-qwen3", "tiny-mlm")


def build_tokenizer(seed: int = 0) -> Tokenizer:
    """Byte-level BPE (any UTF-8 text encodes) trained on seeded synthetic text: deterministic."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = synthetic_text(60_000, seed=seed + 1000).split("\n\n")
    corpus += ["VAR ABCDE = 12345. What are all the variables that are assigned the value 12345?"] * 20
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def _fast_tokenizer(tok: Tokenizer, **kwargs) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=2048, **kwargs)


def _train(model, tokenizer: PreTrainedTokenizerFast, seed: int, steps: int, seq_len: int = 128) -> None:
    """A short seeded language-model training run on synthetic text (single thread: reproducible)."""
    if steps <= 0:
        return
    ids = torch.tensor(tokenizer(synthetic_text(40_000, seed=seed + 7))["input_ids"])
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()
        for _ in range(steps):
            starts = torch.randint(0, len(ids) - seq_len - 1, (8,), generator=gen)
            batch = torch.stack([ids[s : s + seq_len] for s in starts.tolist()])
            loss = model(input_ids=batch, labels=batch).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
    finally:
        torch.set_num_threads(threads)


def make_tiny(out_dir: str | Path, seed: int = 0, train_steps: int = 200) -> dict[str, Path]:
    """Write the three tiny models (each with its tokenizer) under ``out_dir``; returns their paths."""
    out = Path(out_dir)
    tok = build_tokenizer(seed)
    causal_tok = _fast_tokenizer(tok, bos_token=EOS, eos_token=EOS, pad_token="<pad>")
    paths = {}
    for name, template in (("tiny-gpt-neox", None), ("tiny-qwen3", QWEN3_CHAT_TEMPLATE)):
        torch.manual_seed(seed)
        config = make_config(
            name,
            bos_token_id=causal_tok.eos_token_id,
            eos_token_id=causal_tok.eos_token_id,
            pad_token_id=causal_tok.pad_token_id,
        )
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        _train(model, causal_tok, seed, train_steps)
        paths[name] = _save(model, causal_tok, out / name, seed, train_steps, chat_template=template)
    torch.manual_seed(seed)
    mlm_tok = _fast_tokenizer(
        tok,
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        mask_token="<mask>",
    )
    mlm_tok.model_max_length = 4096
    mlm = LongformerForMaskedLM(
        tiny_mlm_config(
            pad_token_id=mlm_tok.pad_token_id, bos_token_id=mlm_tok.bos_token_id, eos_token_id=mlm_tok.eos_token_id
        )
    )
    paths["tiny-mlm"] = _save(mlm.eval(), mlm_tok, out / "tiny-mlm", seed, 0)
    return paths


def tiny_models_asset(out_dir: str | Path, seed: int = 0, train_steps: int = 200):
    """The tiny models as a generated asset: built aside, renamed into place, marked complete with their hash."""
    from longctx.generated_assets import GeneratedAsset

    return GeneratedAsset(
        path=Path(out_dir),
        label="tiny models",
        recipe={"kind": "tiny-models", "seed": seed, "train_steps": train_steps},
        build=lambda path: make_tiny(path, seed=seed, train_steps=train_steps),
        owned_names=frozenset(TINY_MODEL_NAMES),
        hint=" (seeded, about a minute on CPU)",
    )


def ensure_tiny_models(out_dir: str | Path, seed: int = 0, train_steps: int = 200) -> None:
    """Build the tiny models in ``out_dir`` unless a complete build of the same recipe is there (checked by hash).

    An interrupted build leaves nothing at ``out_dir``; an old, partial or edited one is rebuilt with one line
    saying why.
    """
    from longctx.generated_assets import ensure_generated

    ensure_generated(tiny_models_asset(out_dir, seed, train_steps))


def _save(model, tokenizer, path: Path, seed: int, train_steps: int, chat_template: str | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if chat_template:
        tokenizer.chat_template = chat_template
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    if not chat_template:
        tokenizer.chat_template = None
    (path / MARKER).write_text(json.dumps({"seed": seed, "train_steps": train_steps}) + "\n")
    return path
