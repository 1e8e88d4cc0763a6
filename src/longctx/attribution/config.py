"""Attribution settings, declared once: the model settings every run shares, a time cell, an explain call.

A time cell is ``TimeCellConfig``: the shared settings, the cell's method and lengths, repeats, the RULER
sample, and ``options`` — the method's own options dataclass (``longctx.attribution.method``), stored
nested in the result's ``config``. CLI flags, plan data, the config hash and the result JSON all come from
these fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from longctx.attribution.inputs import DEFAULT_TARGET_TEXT
from longctx.attribution.method import MethodSpec, method_spec
from longctx.options import check_fields, option

PROTOCOLS = ("reference", "efficient")


@dataclass(frozen=True, kw_only=True)
class AttributionSettings:
    """What every attribution run shares: model, tokenizer, precision, placement, the explained target."""

    protocol: str = option(
        "efficient", help="reference: the original experiment's code path | efficient: this artifact's",
        choices=PROTOCOLS,
    )  # fmt: skip
    model: str = option(help="local HF directory, offline-cached hub id, or random:<arch>")
    tokenizer: str | None = option(None, help="tokenizer directory (required for random:<arch>)")
    dtype: str = option("bfloat16", help="float32 | float16 | bfloat16")
    attn_implementation: str | None = option(None, help="attention kernel: eager | sdpa | ... (default: transformers')")
    device: str = option("auto", help="auto | cpu | cuda | cuda:N")
    cuda: str | None = option(None, help="GPU indices, e.g. 0,1: shards the model (balanced device map)")
    target_text: str = option(DEFAULT_TARGET_TEXT, help="the explained output text")
    seed: int = option(0, help="seed of random:<arch> weights and of seeded methods")

    @property
    def device_map(self) -> str:
        return "balanced" if self.cuda and "," in self.cuda else self.device

    def load_model(self):
        """The model and tokenizer these settings name, loaded for evaluation (``longctx.models.LoadedModel``)."""
        from longctx.models import load_causal_lm

        return load_causal_lm(
            self.model,
            dtype=self.dtype,
            device=self.device,
            cuda=self.cuda,
            tokenizer=self.tokenizer,
            seed=self.seed,
            attn_implementation=self.attn_implementation,
        )


def _with_options(config, spec: MethodSpec) -> None:
    """Replace a dict (plan data, JSON) or None in ``config.options`` by the method's options instance."""
    object.__setattr__(config, "options", spec.make_options(config.options))


@dataclass(frozen=True, kw_only=True)
class TimeCellConfig(AttributionSettings):
    """One time-curve cell: method × user-prompt length P × output length G, warm-up and repeats."""

    method: str = option(help="attribution method", cli=False)
    prompt_len: int = option(help="P: user-prompt tokens (<= 0 only from a total-length grid)", cli=False)
    output_len: int = option(help="G: output tokens before the EOS", cli=False, minimum=1)
    warmup: int = option(1, help="unmeasured runs before the repeats", minimum=0)
    repeats: int = option(3, help="measured runs per cell", minimum=1)
    ruler_file: str | None = option(None, help="a real RULER JSONL (field 'input'); default: generated")
    ruler_seed: int = option(0, help="seed of the generated variable-tracking sample")
    options: Any = option(None, help="the method's options", cli=False)

    def __post_init__(self):
        check_fields(self)
        _with_options(self, method_spec(self.method))

    @property
    def spec(self) -> MethodSpec:
        return method_spec(self.method)


@dataclass(frozen=True, kw_only=True)
class ExplainConfig(AttributionSettings):
    """One ``longctx attribution explain`` call: a prompt file, a method and its options."""

    dtype: str = option("float32", help="float32 | float16 | bfloat16 (explain reads values: float32 by default)")
    method: str = option(help="attribution method", cli=False)
    prompt_file: str = option(help="UTF-8 text file with the user prompt")
    no_eos: bool = option(False, help="do not append (and score) the EOS token")
    options: Any = option(None, help="the method's options", cli=False)

    def __post_init__(self):
        check_fields(self)
        _with_options(self, method_spec(self.method))
