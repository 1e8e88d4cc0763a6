"""The attribution study's departures from the original (flashtrace 02ef4d3); see ``longctx.departures``."""

from __future__ import annotations

from longctx.departures import Departure

DEPARTURES: list[Departure] = [
    Departure(
        study="attribution",
        item="process model",
        original="one process for the whole grid, no warm-up; a fatal CUDA error fails every later run (rtc)",
        efficient="a fresh worker process per cell, configurable warm-up",
        why="a sticky CUDA error or an OOM kill must not spoil the next cell",
        effect="removes the cascaded failures of the original's out-2/out-3 grids; no effect on values",
        protocol="both",
    ),
]

# Rows below: the gradient, relevance and perturbation methods and the driver. Value effects are measured on the
# original-code fixture's ids (tiny Qwen3, fp32, eager, CPU) by scripts/measure_attribution_departures.py:
# "r" is the Pearson correlation of efficient vs reference over the cells both define.
_FIXTURE = "fixture ids, tiny Qwen3 fp32; scripts/measure_attribution_departures.py"
_TIME = "time/memory: the paper's reference vs efficient series (GPU profiles)"

DEPARTURES += [
    Departure(
        study="attribution",
        item="precision and attention kernel",
        original="fp16 weights, attn_implementation='eager', for every method (rtc load_model_balanced)",
        efficient="the plan's dtype (bfloat16 on timing/full) and transformers' default kernel (sdpa)",
        why="bf16 does not overflow in long attention sums; sdpa never materializes [H, T, T] weights",
        effect=f"values: rounding only; {_TIME}; reference cells run fp16 + eager (fp32 + eager on smoke)",
    ),
    Departure(
        study="attribution",
        item="IG: baseline",
        original="EOS embedding at every position: chat template and earlier outputs too (llm_attr:1391)",
        efficient="EOS embedding at user-prompt and earlier-output positions; template tokens keep theirs",
        why="the baseline stays a well-formed chat turn; template tokens are not attributed columns",
        effect=f"with the quadrature below: r = 0.92, max |diff| 97% of max ({_FIXTURE})",
    ),
    Departure(
        study="attribution",
        item="IG: quadrature",
        original="linspace(0, 1, 20), weights 1/20 with both ends halved: they sum to 0.95 (llm_attr:1372)",
        efficient="Captum's Gauss-Legendre rule, 20 points, weights sum to 1 (rules summing to < 1 refused)",
        why="completeness: sum of IG = f(x) - f(x') up to the quadrature error",
        effect=f"median sum(IG) / (f(x) - f(x')): 0.939 (original) vs 1.000 (efficient) ({_FIXTURE})",
    ),
    Departure(
        study="attribution",
        item="IG: numerics and batching",
        original="full logits at every position, log_softmax of the fp16 last row; batch = min(20, "
        "floor((max_position_embeddings - 100) / T)); weight gradients; empty_cache after every batch",
        efficient="logits_to_keep=1, fp32 log-softmax; batch from free memory; frozen parameters",
        why="the [B, T, V] logits and the weight gradients are pure cost; fp32 avoids fp16 rounding of log p",
        effect=f"values: rounding only (fp32: identical); {_TIME}",
    ),
    Departure(
        study="attribution",
        item="attention×IG: attention factor",
        original="G forwards with output_attentions (all layers' maps stacked twice); last layer, mean over "
        "heads, then mean over ALL query rows (llm_attr:1876-1880)",
        efficient="one traced forward; last layer, mean over heads, the row of the predicting position",
        why="the query-row mean averages rows that never see the later columns (zeros above the diagonal)",
        effect=f"attention factor r = 0.056, product r = 0.37 ({_FIXTURE}); {_TIME}",
    ),
    Departure(
        study="attribution",
        item="AttnLRP: form",
        original="per token: 1 forward with full logits + G backward passes (retain_graph), weight "
        "gradients accumulate (calculate_attnlrp)",
        efficient="span by default: one backward of the summed target logits (attnlrp_form=per_token: G "
        "backwards through only the G target logits, no weight gradients)",
        why="one backward instead of G; per_token stays available with the same values",
        effect="span vs per-token rows r = 0.25; efficient per_token = reference within 1e-7 of the max (tests; "
        f"{_FIXTURE}); {_TIME}",
    ),
    Departure(
        study="attribution",
        item="AttnLRP: identity rule at zero",
        original="slope act(x)/(x + 1e-10) (lrp_rules); in fp16 the eps rounds away: x = 0 gives 0/0 = NaN",
        efficient="slope act(x)/x, 0 where x = 0",
        why="an exactly-zero gate input must not poison the relevance with NaN",
        effect="none in fp32 on the fixture (equal within 1e-7); fp16 NaNs not measured (needs a GPU)",
    ),
    Departure(
        study="attribution",
        item="perturbation: sentences",
        original="spaCy (en_core_web_sm if installed, else blank('en') + sentencizer + newline rule) on the "
        "joined token strings, mapped to tokens by a character walk that counts a newline token one char "
        "long too (later boundaries shift one token); EOS its own sentence (shared_utils)",
        efficient="token-suffix rule: a sentence ends at a token ending in . ! ? or a newline; EOS joins the last",
        why="token-aligned by construction (no walk to drift), no spaCy in the efficient path",
        effect="perturbation_all r = 0.98 over 2333 shared cells; generated RULER P=G=1000 (tiny tokenizer): "
        f"95/85 vs 96/84 prompt/output sentences, 11730 vs 11634 forwards ({_FIXTURE})",
    ),
    Departure(
        study="attribution",
        item="perturbation: spaCy model",
        original="en_core_web_sm (parser sentences) when installed; whether the run had it is not recorded",
        efficient="-",
        why="the model cannot be downloaded here: the reference protocol uses the original's own fallback "
        "(blank + sentencizer + newline rule, spaCy 3.8.18) and records it in every result",
        effect="unknown: parser sentences would change the sentence count (time) and the values",
        protocol="reference",
    ),
    Departure(
        study="attribution",
        item="perturbation: loop",
        original="one unbatched forward per (output sentence, feature), full logits and a log_softmax over "
        "every position and the whole vocabulary (fp16 for log-prob, fp32 for CLP) (llm_attr:1491-1667)",
        efficient="ablated variants of equal length batched, logits_to_keep = the sentence's rows, fp32",
        why="the same forwards (sum over output sentences of 1 + features) at a fraction of the cost",
        effect="given the same sentences: equal within 1e-4 (tests); forward count quadratic in output "
        f"sentences in both; {_TIME}",
    ),
    Departure(
        study="attribution",
        item="perturbation: within-sentence cells",
        original="earlier tokens of the current output sentence stay NaN (not features)",
        efficient="0 there; NaN only at non-causal positions",
        why="a causal cell the method did not ablate scores nothing, which is 0",
        effect=f"147 of 2480 cells differ in kind (NaN vs 0) ({_FIXTURE})",
    ),
    Departure(
        study="attribution",
        item="perturbation_CLP: score",
        original="f(p_orig) - f(p_abl) with f(p) = sum_v p(y)(log p(y) - log p(v)): each distribution against "
        "itself, not a divergence; can be negative (llm_attr:1521-1560)",
        efficient="KL(p_orig || p_ablated) over the full next-token distributions (fp32), >= 0",
        why="the method is described as a KL between the original and the ablated predictions",
        effect=f"r = -0.10; 59% of the original's values are negative ({_FIXTURE})",
    ),
    Departure(
        study="attribution",
        item="ReAGent: replacement",
        original="the whole current sequence (template, prompt, earlier outputs) as text with one <mask> per "
        "LLM token; Longformer input right-truncated at 4096 silently (late sentences lose their masks: EOS "
        "padding); guess cut or EOS-padded to the masked length (llm_attr:1676-1732)",
        efficient="context = user prompt + earlier outputs; as many masks as the MLM's tokens of the sentence; "
        "beyond the limit an error (or a recorded window); the guess may change the length",
        why="the masked LM should see the text the attribution is about, with a natural number of masks",
        effect=f"r = 0.63 ({_FIXTURE}); the reference records n_masks_truncated",
    ),
    Departure(
        study="attribution",
        item="Longformer in perturbation_all/_CLP",
        original="LLMPerturbationAttribution loads Longformer (≈0.6 GB fp32) for all three perturbation methods, "
        "after the peak-memory reset (rtc:680; llm_attr:1482)",
        efficient="loaded only by ReAGent",
        why="the two EOS-ablation methods never use it; the reference protocol does not emulate the idle load",
        effect="the original's perturbation_all/CLP peaks include ≈0.6 GB this artifact's do not",
        protocol="reference",
    ),
    Departure(
        study="attribution",
        item="weight gradients",
        original="parameters keep requires_grad: IG, attention×IG and AttnLRP backwards also compute weight "
        "gradients; their .grad (≈16.4 GB for Qwen3-8B fp16) stays allocated for every later method of the "
        "process (IG zeroes before each backward; AttnLRP accumulates)",
        efficient="parameters frozen: no weight gradients",
        why="weight gradients are pure cost for input attribution",
        effect="reference: parameters trainable inside the call (weight gradients counted), freed at its end; "
        "leftovers across methods are not emulated (a fresh process per cell): the original's peaks after the "
        "first IG carry +16.4 GB (out-1: ≈32.2 vs 16.4 GB idle allocated)",
        protocol="reference",
    ),
    Departure(
        study="attribution",
        item="peak memory metric",
        original="sum over GPUs of max_memory_RESERVED in GB (1e9), stats reset before empty_cache (the "
        "previous method's cache counts) (rtc:312-323, 735)",
        efficient="allocated and reserved both recorded, reset after empty_cache; tables show allocated",
        why="allocated is what the method needs; reserved depends on the allocator's history",
        effect="the paper compares allocated with the original's allocated (ok runs); the time-curve CSV's "
        "peak_mem_mean is reserved in GB like the original's",
        protocol="both",
    ),
    Departure(
        study="attribution",
        item="inputs",
        original="P ids tiled and decoded, ' ' + prompt in 'Context:{prompt}\\n\\n\\nQuery: ', chat template "
        "tokenized as text (Qwen3: P-1 user tokens), target + EOS tokenized as text, user span by first-id "
        "match (rtc:163-214; llm_attr:199-273)",
        efficient="exactly P user ids placed in the chat template, no wrapper, EOS id appended",
        why="a time curve over P should have P user tokens; the wrapper is not part of the methods",
        effect="reference reproduces the original's ids exactly (fixture test); efficient cells have "
        "1 more user token (Qwen3) and no wrapper tokens",
    ),
    Departure(
        study="attribution",
        item="RULER text",
        original="the first record of data/ruler_multihop/8192/vt_h10_c1/validation.jsonl (not published), "
        "else 'RULER fallback text. '",
        efficient="a generated variable-tracking sample (seeded), or --ruler-file",
        why="the original's file is not available",
        effect="only the number of sentences matters for time (perturbation methods); values not comparable",
        protocol="both",
    ),
]
