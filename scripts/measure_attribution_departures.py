#!/usr/bin/env python3
"""Measure the effect on values of each attribution departure (the ``effect`` column of the departures table).

Runs both protocols of IG, attention x IG, AttnLRP and the three perturbation methods on the exact ids of
the original-code fixture (tests/fixtures/original_attribution: tiny Qwen3, fp32, eager, CPU), so only the
method differs, and prints one JSON object: per method the Pearson correlation and the largest absolute
difference (relative to the largest reference value) over the cells both protocols define, plus the
single-factor effects (IG quadrature and baseline, attention row, AttnLRP form, sentence splitter) and
the forward counts of the perturbation loops on a generated RULER prompt. CPU only; about a minute.

    PYTHONPATH=src python scripts/measure_attribution_departures.py [--ruler-prompt 1000 --ruler-output 1000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "original_attribution"


def compare(efficient: torch.Tensor, reference: torch.Tensor) -> dict:
    """Agreement over the cells both define: Pearson r, max |diff| / max |reference|, cells compared."""
    both = ~torch.isnan(efficient) & ~torch.isnan(reference)
    e, r = efficient[both].double(), reference[both].double()
    pearson = float(torch.corrcoef(torch.stack([e, r]))[0, 1]) if len(e) > 1 else None
    scale = float(r.abs().max()) or 1.0
    return {
        "pearson": pearson,
        "max_abs_diff_rel": float((e - r).abs().max()) / scale,
        "cells_compared": int(both.sum()),
        "cells_only_efficient": int((~torch.isnan(efficient) & torch.isnan(reference)).sum()),
        "cells_only_reference": int((torch.isnan(efficient) & ~torch.isnan(reference)).sum()),
    }


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def load_fixture():
    from transformers import AutoModelForCausalLM

    from longctx.attribution.reference_inputs import reference_inputs
    from longctx.models import load_tokenizer

    case = json.loads((FIXTURES / "case.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(
        FIXTURES / "model", dtype=torch.float32, attn_implementation="eager", local_files_only=True
    ).eval()
    model.requires_grad_(False)
    tokenizer = load_tokenizer(FIXTURES / "tokenizer")
    return model, tokenizer, reference_inputs(tokenizer, case["prompt"], case["target"])


def method_effects(model, tokenizer, inputs) -> dict:
    """Efficient vs reference per method on the same ids (defaults of both protocols)."""
    from longctx.attribution.method import method_spec
    from longctx.attribution.methods.reagent import ReagentOptions

    out = {}
    for name in ("IG", "attention_I_G", "attnlrp", "perturbation_all", "perturbation_CLP", "perturbation_REAGENT"):
        spec = method_spec(name)
        options = ReagentOptions(mlm_model=str(FIXTURES / "mlm")) if name == "perturbation_REAGENT" else None
        options = options or spec.make_options()
        spec.runner("reference")(model, tokenizer, inputs, options)  # warm-up: spaCy pipeline, masked LM load
        reference, t_ref = timed(
            lambda spec=spec, options=options: spec.runner("reference")(model, tokenizer, inputs, options)
        )
        efficient, t_eff = timed(
            lambda spec=spec, options=options: spec.runner("efficient")(model, tokenizer, inputs, options)
        )
        out[name] = {
            **compare(efficient.matrix, reference.matrix),
            "cpu_seconds_reference": t_ref,
            "cpu_seconds_efficient": t_eff,
        }
        if name == "perturbation_CLP":
            defined = reference.matrix[~torch.isnan(reference.matrix)]
            out[name]["reference_negative_share"] = float((defined < 0).double().mean())
    return out


def ig_factors(model, tokenizer, inputs) -> dict:
    """IG's quadrature and baseline separately (one factor changed at a time), and completeness."""
    from longctx.attribution.methods.gradient_reference import original_ig_weights
    from longctx.attribution.methods.ig import Quadrature, baseline_embeddings, integrated_gradients, quadrature

    embed = model.get_input_embeddings()
    ids = inputs.input_ids[0]
    x = embed(ids).detach()
    all_eos = embed(torch.full_like(ids, tokenizer.eos_token_id)).detach()
    template_kept = baseline_embeddings(model, inputs, x, tokenizer.eos_token_id)
    alphas, weights = original_ig_weights(20)
    original_rule = Quadrature("original", alphas.double(), weights.double())
    legendre = quadrature("gausslegendre", 20)

    def rows(rule, baseline):
        out = []
        for g in range(inputs.n_gen):
            n = inputs.prompt_len + g
            out.append(integrated_gradients(model, x[:n], baseline[:n], inputs.generation_ids[g], rule, 20).sum())
        return torch.stack(out)

    def gap(baseline):
        """f(x) - f(x') per row: log p(y_g) at the input and at the baseline."""
        values = []
        for g in range(inputs.n_gen):
            n = inputs.prompt_len + g
            with torch.no_grad():
                lp_x = model(inputs_embeds=x[None, :n]).logits[0, -1].log_softmax(-1)[inputs.generation_ids[g]]
                lp_b = model(inputs_embeds=baseline[None, :n]).logits[0, -1].log_softmax(-1)[inputs.generation_ids[g]]
            values.append(lp_x - lp_b)
        return torch.stack(values)

    completeness = {
        "original_rule_all_eos": float((rows(original_rule, all_eos) / gap(all_eos)).median()),
        "gausslegendre_template_kept": float((rows(legendre, template_kept) / gap(template_kept)).median()),
    }
    return {"completeness_median_sum_over_gap": completeness, "weight_sum_original": float(weights.sum())}


def single_factor_effects(model, tokenizer, inputs) -> dict:
    """Attention row choice and AttnLRP form, each alone."""
    from longctx.attribution.methods.attention_ig import last_layer_attention_rows
    from longctx.attribution.methods.attnlrp import AttnLRPOptions, attnlrp
    from longctx.attribution.methods.gradient_reference import original_attention_scores
    from longctx.attribution.reference_runtime import original_columns

    query_mean = original_columns(inputs, original_attention_scores(model, inputs))
    predicting = last_layer_attention_rows(model, inputs.input_ids, inputs.generation_positions() - 1, 32)
    span = attnlrp(model, tokenizer, inputs, AttnLRPOptions(attnlrp_form="span")).matrix
    per_token = attnlrp(model, tokenizer, inputs, AttnLRPOptions(attnlrp_form="per_token")).matrix
    return {
        "attention_predicting_row_vs_query_mean": compare(inputs.matrix_from_positions(predicting), query_mean),
        "attnlrp_span_vs_per_token": compare(span, per_token),
    }


def sentence_counts(prompt_tokens: int, output_tokens: int) -> dict:
    """Sentences and unbatched forwards of the perturbation loop with each splitter, on a generated RULER
    prompt tiled to ``prompt_tokens`` and the target tiled to ``output_tokens`` (tiny tokenizer)."""
    from longctx.attribution.inputs import DEFAULT_TARGET_TEXT
    from longctx.attribution.methods.perturbation import row_sentences
    from longctx.attribution.methods.perturbation_reference import feature_masks
    from longctx.attribution.reference_inputs import reference_inputs_to_length
    from longctx.data.ruler import load_ruler_sample
    from longctx.models import load_tokenizer

    tokenizer = load_tokenizer(FIXTURES / "tokenizer")
    inputs = reference_inputs_to_length(
        tokenizer, load_ruler_sample(None, 0).text, prompt_tokens, DEFAULT_TARGET_TEXT, output_tokens
    )
    masks, output_masks, n_prompt = feature_masks(tokenizer, inputs)
    user, outputs = row_sentences(tokenizer, inputs)
    o_ref, o_eff = len(output_masks), len(outputs)
    return {
        "prompt_tokens": prompt_tokens,
        "output_tokens": output_tokens,
        "spacy": {"prompt_sentences": n_prompt, "output_sentences": o_ref},
        "suffix_rule": {"prompt_sentences": len(user), "output_sentences": o_eff},
        "reference_forwards": sum(1 + n_prompt + s for s in range(o_ref)),
        "efficient_sequences": sum(1 + len(user) + s for s in range(o_eff)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ruler-prompt", type=int, default=1000)
    parser.add_argument("--ruler-output", type=int, default=1000)
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tokenizer, inputs = load_fixture()
    report = {
        "case": "tests/fixtures/original_attribution (tiny Qwen3, fp32, eager, CPU; the original's ids)",
        "methods": method_effects(model, tokenizer, inputs),
        "ig": ig_factors(model, tokenizer, inputs),
        **single_factor_effects(model, tokenizer, inputs),
        "sentences": sentence_counts(args.ruler_prompt, args.ruler_output),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
