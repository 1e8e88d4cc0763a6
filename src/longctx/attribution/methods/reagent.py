"""perturbation_REAGENT: sentence ablation where the sentence is replaced by a masked LM's guess.

The row's context (user prompt, then earlier outputs) is decoded to text; the sentence's text is masked with
as many mask tokens as the masked LM's tokenizer gives it, the MLM's argmax predictions are decoded and
re-tokenized with the causal LM's tokenizer (the length may change: the ablated sequence is then shorter or
longer, rows are read from its end). Score = drop in log p(y_g), as in perturbation_all. The MLM's length
limit (``mlm_max_length``, 4096 for Longformer-base-4096) is explicit: ``mlm_overflow="error"`` raises
RunFailure, ``"truncate"`` keeps a window of context around the sentence and records it in the details.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from functools import lru_cache

import torch

from longctx.attribution.embeddings import embedding_device
from longctx.attribution.inputs import AttributionInputs
from longctx.attribution.method import AttributionResult, MethodSpec, register
from longctx.attribution.methods.perturbation import Sentence, log_prob_drop, perturbation_position_scores
from longctx.attribution.methods.perturbation_reference import (
    build_sentence_splitter,
    original_sentence_ablation,
    response_log_probs,
)
from longctx.attribution.reference_runtime import original_columns
from longctx.errors import RunFailure, UsageError
from longctx.models import eos_id, load_tokenizer, resolve_model_dir
from longctx.options import check_fields, option

OVERFLOW_MODES = ("error", "truncate")
MAX_RECORDED_TRUNCATIONS = 20


@dataclass(frozen=True)
class ReagentOptions:
    """The masked LM that proposes replacements, and what to do with inputs beyond its length limit."""

    mlm_model: str | None = option(None, help="ReAGent masked LM (directory or cached hub id)")
    mlm_max_length: int = option(4096, help="the masked LM's input limit in tokens", minimum=2)
    mlm_overflow: str = option("error", help="input beyond the limit: fail, or truncate and record it",
                               choices=OVERFLOW_MODES)  # fmt: skip

    def __post_init__(self):
        check_fields(self)


@lru_cache(maxsize=1)
def load_masked_lm(spec: str, device: str):
    """The masked LM and its tokenizer (offline; cached: loading is not part of the method's time)."""
    from transformers import AutoModelForMaskedLM

    path, revision = resolve_model_dir(spec)
    model = AutoModelForMaskedLM.from_pretrained(path, local_files_only=True).to(device)
    return model.eval().requires_grad_(False), load_tokenizer(path), revision


@dataclass
class MaskedLMReplacer:
    """Replaces a sentence by the masked LM's argmax predictions, re-tokenized for the causal LM."""

    mlm: object
    mlm_tokenizer: object
    causal_tokenizer: object
    max_length: int
    overflow: str
    eos_id: int
    n_replacements: int = 0
    n_length_changed: int = 0
    n_empty: int = 0
    truncations: list[dict] = field(default_factory=list)
    n_truncated: int = 0

    def _encode(self, text: str) -> list[int]:
        return list(self.mlm_tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def _specials(self) -> tuple[list[int], list[int]]:
        tok = self.mlm_tokenizer
        cls_id = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        sep_id = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        return [cls_id] if cls_id is not None else [], [sep_id] if sep_id is not None else []

    def mlm_input(self, context: list[int], sentence: Sentence) -> tuple[list[int], int, int]:
        """MLM ids [cls] left [mask]*m right [sep], the mask start and count; overflow handled per policy."""
        start, end = sentence.context
        decode = self.causal_tokenizer.decode
        left, right = self._encode(decode(context[:start])), self._encode(decode(context[end:]))
        n_mask = max(1, len(self._encode(decode(context[start:end]))))
        head, tail = self._specials()
        total = len(head) + len(left) + n_mask + len(right) + len(tail)
        if total > self.max_length:
            left, right = self._truncate(left, right, n_mask, total, sentence)
        masks = [self.mlm_tokenizer.mask_token_id] * n_mask
        return head + left + masks + right + tail, len(head) + len(left), n_mask

    def _truncate(self, left: list[int], right: list[int], n_mask: int, total: int, sentence: Sentence):
        budget = self.max_length - n_mask - sum(map(len, self._specials()))
        if self.overflow == "error" or budget < 0:
            raise RunFailure(
                f"perturbation_REAGENT: the masked-LM input for sentence {list(sentence.context)} has {total} "
                f"tokens, over mlm_max_length={self.max_length}"
                + ("" if budget < 0 else "; set mlm_overflow='truncate' to keep a context window (recorded)")
            )
        keep_right = min(len(right), max(budget // 2, budget - len(left)))
        keep_left = min(len(left), budget - keep_right)
        self.n_truncated += 1
        if len(self.truncations) < MAX_RECORDED_TRUNCATIONS:
            self.truncations.append(
                {
                    "sentence": list(sentence.context),
                    "mlm_tokens": total,
                    "kept_left": keep_left,
                    "kept_right": keep_right,
                    "dropped": total - self.max_length,
                }  # fmt: skip
            )
        return left[len(left) - keep_left :], right[:keep_right]

    def __call__(self, context: list[int], sentence: Sentence) -> list[int]:
        ids, mask_start, n_mask = self.mlm_input(context, sentence)
        device = self.mlm.get_input_embeddings().weight.device
        with torch.no_grad():
            logits = self.mlm(input_ids=torch.tensor([ids], device=device)).logits[0]
        predicted = logits[mask_start : mask_start + n_mask].argmax(-1).tolist()
        text = self.mlm_tokenizer.decode(predicted, skip_special_tokens=True)
        replacement = list(self.causal_tokenizer(text, add_special_tokens=False)["input_ids"])
        self.n_replacements += 1
        if not replacement:  # the MLM predicted only special tokens: keep the ablation, with one EOS
            self.n_empty += 1
            replacement = [self.eos_id]
        self.n_length_changed += len(replacement) != sentence.context[1] - sentence.context[0]
        return replacement

    def record(self) -> dict:
        return {
            "mlm_max_length": self.max_length,
            "mlm_overflow": self.overflow,
            "n_replacements": self.n_replacements,
            "n_length_changed": self.n_length_changed,
            "n_empty_predictions": self.n_empty,
            "n_truncated": self.n_truncated,
            "truncations": self.truncations,
        }


def perturbation_reagent(model, tokenizer, inputs: AttributionInputs, options: ReagentOptions) -> AttributionResult:
    """Sentence ablation by masked-LM replacement (``options.mlm_model``); score = drop in log p(y_g)."""
    if not options.mlm_model:
        raise UsageError("perturbation_REAGENT needs a masked LM: set --mlm-model (a directory or cached hub id)")
    eos = eos_id(tokenizer, "perturbation_REAGENT (for empty predictions)")
    mlm, mlm_tokenizer, revision = load_masked_lm(options.mlm_model, str(embedding_device(model)))
    limit = min(options.mlm_max_length, getattr(mlm_tokenizer, "model_max_length", options.mlm_max_length))
    replacer = MaskedLMReplacer(mlm, mlm_tokenizer, tokenizer, limit, options.mlm_overflow, eos)
    scores, counts = perturbation_position_scores(model, tokenizer, inputs, replacer, log_prob_drop)
    details = {
        "replacement": "masked-LM argmax, re-tokenized",
        "score": "log p_orig(y_g) - log p_ablated(y_g)",
        "mlm_model": options.mlm_model,
        "mlm_revision": revision,
        **replacer.record(),
        **counts,
    }
    return AttributionResult(inputs.matrix_from_positions(scores), details)


@dataclass
class OriginalMaskedLMAblation:
    """The original's ``mlm_mask_indices``: the whole current LLM sequence (chat template, prompt, earlier
    outputs) becomes text with one mask token per ablated LLM token, the masked LM reads it right-truncated to
    ``max_length`` (silently in the original; counted here), its argmax guesses are decoded (" " prefixed),
    re-tokenized by the LLM's tokenizer and cut or EOS-padded to the ablated length."""

    mlm: object
    mlm_tokenizer: object
    causal_tokenizer: object
    max_length: int
    eos_id: int
    n_calls: int = 0
    n_at_max_length: int = 0
    n_masks_truncated: int = 0

    def __call__(self, sequence: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        tokens = self.causal_tokenizer.convert_ids_to_tokens(sequence[0].tolist())
        for index in positions.tolist():
            tokens[index] = self.mlm_tokenizer.mask_token
        text = self.causal_tokenizer.convert_tokens_to_string(tokens)
        device = self.mlm.get_input_embeddings().weight.device
        encoded = self.mlm_tokenizer(text, return_tensors="pt", max_length=self.max_length, truncation=True)
        encoded = {key: value.to(device) for key, value in encoded.items()}
        masked = (encoded["input_ids"] == self.mlm_tokenizer.mask_token_id).nonzero(as_tuple=True)[1]
        if "global_attention_mask" in inspect.signature(self.mlm.forward).parameters:
            encoded["global_attention_mask"] = torch.zeros_like(encoded["input_ids"])
            encoded["global_attention_mask"][0, masked] = 1
        with torch.no_grad():
            predicted = self.mlm(**encoded).logits[0, masked, :].argmax(dim=-1)
        guess = self.mlm_tokenizer.decode(predicted, skip_special_tokens=True)
        if guess and guess[0] != " ":
            guess = " " + guess
        replacement = self.causal_tokenizer(guess)["input_ids"][: len(positions)]
        replacement += [self.eos_id] * (len(positions) - len(replacement))
        self.n_calls += 1
        self.n_at_max_length += encoded["input_ids"].shape[1] >= self.max_length
        self.n_masks_truncated += len(positions) - len(masked)
        return torch.tensor([replacement], dtype=torch.long, device=sequence.device)

    def record(self) -> dict:
        return {
            "mlm_max_length": self.max_length,
            "n_replacements": self.n_calls,
            "n_mlm_inputs_at_max_length": self.n_at_max_length,
            "n_masks_truncated": self.n_masks_truncated,
        }


def reagent_reference_setup(model, options: ReagentOptions) -> None:
    """Before timing, as the original's constructor: the masked LM on the model's device, spaCy's pipeline."""
    build_sentence_splitter()
    if options.mlm_model:
        load_masked_lm(options.mlm_model, str(embedding_device(model)))


def perturbation_reagent_reference(model, tokenizer, inputs: AttributionInputs, options: ReagentOptions):
    """ReAGent as the original runs it: masked-LM replacement of the whole sequence's masked tokens
    (``OriginalMaskedLMAblation``), log p_orig - log p_ablated, the original's loop and features."""
    if not options.mlm_model:
        raise UsageError("perturbation_REAGENT needs a masked LM: set --mlm-model (a directory or cached hub id)")
    eos = eos_id(tokenizer, "perturbation_REAGENT (replacements are padded with EOS)")
    mlm, mlm_tokenizer, revision = load_masked_lm(options.mlm_model, str(embedding_device(model)))
    ablate = OriginalMaskedLMAblation(mlm, mlm_tokenizer, tokenizer, options.mlm_max_length, eos)
    scores, counts = original_sentence_ablation(model, tokenizer, inputs, ablate, response_log_probs)
    details = {
        "replacement": "masked-LM argmax over the whole sequence, one mask per LLM token, length kept",
        "score": "log p_orig(y) - log p_ablated(y), log_softmax in the model dtype",
        "mlm_model": options.mlm_model,
        "mlm_revision": revision,
        **ablate.record(),
        **counts,
    }
    return AttributionResult(original_columns(inputs, scores), details)


register(
    MethodSpec(
        "perturbation_REAGENT",
        "ReAGent",
        "perturbation",
        ReagentOptions,
        perturbation_reagent,
        reference=perturbation_reagent_reference,
        reference_setup=reagent_reference_setup,
    )
)
