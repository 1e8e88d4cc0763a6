"""perturbation_REAGENT: sentence ablation where the sentence is replaced by a masked LM's guess.

The row's context (user prompt, then earlier outputs) is decoded to text; the sentence's text is masked with
as many mask tokens as the masked LM's tokenizer gives it, the MLM's argmax predictions are decoded and
re-tokenized with the causal LM's tokenizer (the length may change: the ablated sequence is then shorter or
longer, rows are read from its end). Score = drop in log p(y_g), as in perturbation_all. The MLM's length
limit (``mlm_max_length``, 4096 for Longformer-base-4096) is explicit: ``mlm_overflow="error"`` raises
RunFailure, ``"truncate"`` keeps a window of context around the sentence and records it in the details.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import torch

from longctx.attribution.embeddings import embedding_device
from longctx.attribution.inputs import AttributionInputs
from longctx.attribution.method import AttributionResult, MethodSpec, register
from longctx.attribution.methods.perturbation import Sentence, log_prob_drop, perturbation_position_scores
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


register(MethodSpec("perturbation_REAGENT", "ReAGent", "perturbation", ReagentOptions, perturbation_reagent))
