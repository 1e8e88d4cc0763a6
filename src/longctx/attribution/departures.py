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

# What every method explains: the inputs of a cell (longctx.attribution.reference_inputs for the reference).
INPUTS: list[Departure] = [
    Departure(
        study="attribution",
        item="inputs: prompt and target construction",
        original="P tiled ids decoded; user message 'Context:' + ' ' + prompt + '\\n\\n\\nQuery: ' in the chat "
        "template (thinking off), tokenized as one text (Qwen3-8B: P-1 user tokens, template +18 or +17); target + "
        "EOS tokenized as text; user columns by first-id match (run_time_curve.py build_prompt_to_length, "
        "llm_attr.format_prompt / target_response)",
        efficient="exactly P user ids placed verbatim in the chat template (no wrapper, no leading space), the EOS id "
        "appended, the user span known by construction; the reference protocol rebuilds the original's inputs",
        why="the efficient protocol controls the lengths exactly; the reference protocol measures what the original "
        "measured",
        effect="fixture tokenizer, P=64/G=30: reference 65 user / 109 prompt tokens, efficient 64 / 92; P=1000/G=10: "
        "1001 / 1045 vs 1000 / 1028; the G+1 generation ids are the same",
    ),
    Departure(
        study="attribution",
        item="peak memory metric",
        original="sum over devices of max_memory_reserved (GB = 1e9), reset before empty_cache in one process, so a "
        "run's reserved peak starts from the previous method's cache (run_time_curve.py measure, maybe_reset_cuda)",
        efficient="a fresh process per cell, peaks reset after emptying the cache; allocated and reserved both "
        "recorded; the time-curve CSV's peak_mem_* is reserved GB (1e9) like the original's, allocated beside it",
        why="a cell's peak must be its own",
        effect="the original's reserved figure can be another method's: ifr_all_positions at P=10/G=1000 shows "
        "117.906 GB reserved (perturbation_REAGENT's peak just before it) for 38.9 GB allocated",
        protocol="both",
    ),
    Departure(
        study="attribution",
        item="trainable parameters",
        original="parameters keep requires_grad: every backward (IG, attention_I_G, attnlrp) also computes weight "
        "gradients and leaves about 16.4 GB of .grad allocated for every later method of the process; the "
        "perturbation forwards run outside no_grad, so each keeps its activations for a backward that never comes",
        efficient="parameters frozen at load; no weight gradients, perturbation forwards under no_grad",
        why="attribution needs input gradients only; stale gradients would charge one method's memory to the next",
        effect="the reference protocol makes the parameters trainable inside IG, attention_I_G, attnlrp and the "
        "perturbation methods (weight gradients and the forwards' graphs counted) and frees the .grad at the end of "
        "the call; leftovers across methods are not emulated (a fresh process per cell): the original's allocated "
        "peaks after its first IG carry about 32.2 GB instead of 16.4 GB at rest (out-1), IFR and FlashTrace included",
        protocol="reference",
    ),
]

# IFR (ifr_all_positions), FlashTrace (ifr_multi_hop) and FlashTrace with stop tokens (ifr_multi_hop_both).
# Measured with the fixture model of tests/fixtures/original_attribution (fp32, CPU) unless said otherwise;
# "max diff" is the largest absolute difference over the largest score of the original.
ROUTING: list[Departure] = [
    Departure(
        study="attribution",
        item="IFR / FlashTrace: proximity per (source, head)",
        original="a proximity for every (source token, head) term, summed over heads; the residual competes with "
        "all terms (ifr_core compute_ifr_for_all_positions, compute_ifr_sentence_aggregate)",
        efficient="the same, in both protocols (attribution/routes.py); earlier versions of this artifact took the "
        "proximity of the head-summed route (issue #11 item 1)",
        why="the original's and the paper's definition",
        effect="head-summed vs original: IFR corr 0.974, max diff 24%; FlashTrace corr 0.938, 43%; both 0.914, 39%. "
        "Now: efficient vs original within 1.4e-5 (IFR), 1.3e-5 (FlashTrace), 9e-6 (both); reference exact",
        protocol="none",
    ),
    Departure(
        study="attribution",
        item="IFR / FlashTrace: proximity arithmetic",
        original="max(0, ||y||_1 - ||y - c||_1) as the difference of two fp32 L1 norms (ifr_core): a contribution "
        "much smaller than the residual is lost in the rounding of ||y||_1, and more of them as T grows",
        efficient="the same quantity summed per dimension as s c - 2 relu(s c - |y|) with s = sign(y), which has "
        "no cancellation (attribution/routes.py); the reference keeps the original's form",
        why="accuracy: the original's small scores are rounding noise at long sequences",
        effect="tiny Qwen3 (explain, T=1973): the original's FlashTrace E0 (fp32) is 1.5e-4 of the largest score away "
        "from a float64 evaluation, the efficient fp32 one 3e-6; explain vs original (max diff, FlashTrace) 1.5e-4 "
        "(T=1973), 1.1e-4 (T=1166), 1.4e-5 (T=109)",
    ),
    Departure(
        study="attribution",
        item="IFR (all positions): sinks and row convention",
        original="row g = IFR of the output token's own position prompt_len + g (the EOS position too); the sink "
        "itself is a source; 0, not NaN, at later outputs (llm_attr calculate_ifr_for_all_positions)",
        efficient="the same in both protocols; earlier versions used the predicting position prompt_len + g - 1 and "
        "NaN at outputs k >= g",
        why="the original's definition",
        effect="predicting-position sinks vs original (user columns): corr 0.148, max diff 94%",
        protocol="none",
    ),
    Departure(
        study="attribution",
        item="FlashTrace: explained span and score",
        original="sink span = hop span = the whole generation incl. EOS, 1 hop, raw E0*m + r0*E1*m with m = prompt "
        "positions (chat template incl.), every row equal, 0 at output columns; both: span without EOS, stop tokens "
        "weight 0 and score 0, their rows and the EOS row NaN (llm_attr calculate_ifr_multi_hop, ft_ifr_improve)",
        efficient="the same in both protocols (attribution/spans.py); earlier versions explained the last output "
        "sentence with the output before it as hop span, renormalised the scores and NaN-masked rows causally",
        why="the original's definition (issue #11 item 2)",
        effect="earlier artifact vs original (user columns): FlashTrace corr 0.910, max diff 38%; both corr 0.832, 49%",
        protocol="none",
    ),
    Departure(
        study="attribution",
        item="IFR / FlashTrace: attention maps and passes",
        original="one eager forward with output_attentions and the LM head keeps every [L, H, T, T] map and four "
        "residual streams per layer until the method returns; every hop reuses them (llm_attr _capture_model_state)",
        efficient="the decoder traced layer by layer with any kernel (sdpa by default), no LM head; attention rows "
        "recomputed from post-RoPE q/k a chunk of sinks at a time, values a chunk of sources at a time; one pass "
        "per hop",
        why="memory linear in the sequence (issue #13): the original's maps are 232 GB at T = 10k on Qwen3-8B",
        effect="values: see the proximity rows. CPU (1 thread on a shared 2-core machine), tiny Qwen3 (hidden 64, 2 "
        "layers), exact tensor bytes: FlashTrace T=1055: 0.52 s / 72 MiB (reference, eager) vs 0.73 s / 3.6 MiB "
        "(efficient, sdpa); T=4055: 11.1 s / 1067 MiB vs 5.1 s / 13.8 MiB. GPU: not measured",
    ),
    Departure(
        study="attribution",
        item="IFR (all positions): sink chunk",
        original="sink_chunk_tokens = 1 for ifr_all_positions (run_time_curve.py make_attr_runner): one loop over "
        "source chunks per sink and layer",
        efficient="sink_chunk_tokens sinks per block (plans: 32; the reference keeps 1), heads taken in groups of at "
        "most 2^25 elements per block",
        why="fewer, larger kernels",
        effect="CPU, tiny Qwen3, T=1055 (with the map storage above): 10.5 s / 57.7 MiB (reference) vs 1.6 s / "
        "11.0 MiB (efficient, incl. the 4.2 MiB result). GPU: not measured",
    ),
    Departure(
        study="attribution",
        item="FlashTrace: result form",
        original="a NaN-filled [G, T] fp32 matrix with the vector copied into every explained row, then its user "
        "and output columns, inside the timed call",
        efficient="one vector over the sequence per hop (SpanScores); explain expands it to a matrix for display, "
        "outside the timed call",
        why="no (span x sequence) tensor (issue #13 item 3)",
        effect="4 G T bytes fewer (400 MB at G = T = 10k); FlashTrace's exact peak on a hidden-64 Qwen3 grows 5.0x "
        "from G=1024 to 4096 above the G=256 level, (4096 - 256) / (1024 - 256) for a linear term",
    ),
    Departure(
        study="attribution",
        item="IFR / FlashTrace: fp16 arithmetic",
        original="with an fp16 model: token accumulators, span-summed attention rows, sink weights and (v W_O) * "
        "summed rows in fp16; values from x linearised in fp32, cast to fp16 (ifr_core)",
        efficient="captured activations cast to fp32, everything after them in fp32 (the reference keeps the fp16 "
        "steps)",
        why="fp16 sums over thousands of terms lose digits and can overflow",
        effect="fixture model in fp16 (CPU) vs fp32: reference 0.35% (IFR), 0.20% (FlashTrace), 0.08% (both) max "
        "diff; efficient fp16 vs reference fp16 0.11%, 0.035%, 0.053%; no overflow seen on synthetic models up to "
        "G = 2000; Qwen3-8B not measured (needs a GPU)",
    ),
    Departure(
        study="attribution",
        item="IFR / FlashTrace: biases and norm",
        original="values (x w / sqrt(mean x^2 + eps)) W_V without the V bias, residual term x without the O bias; eps "
        "from an 'eps' attribute (Qwen3's norm calls it variance_epsilon: 1e-6 always); Llama/Qwen decoders only",
        efficient="values from the model's own v_proj on its normalised input (V bias travels with the source), the "
        "O bias joins the residual term; GPT-NeoX too",
        why="an exact decomposition of any supported decoder",
        effect="none on Qwen3 (no attention biases, rms_norm_eps 1e-6): fp32 rounding; a tiny Qwen3 with random "
        "q/k/v/o biases (std 0.5): efficient vs reference corr 0.22 (IFR), 0.54 (FlashTrace)",
    ),
]

# Precision, IG, attention x IG, AttnLRP, the perturbation methods and the RULER text. Value effects are measured
# on the original-code fixture's ids (tiny Qwen3, fp32, eager, CPU) by scripts/measure_attribution_departures.py:
# "r" is the Pearson correlation of efficient vs reference over the cells both define.
_FIXTURE = "fixture ids, tiny Qwen3 fp32; scripts/measure_attribution_departures.py"
_TIME = "time/memory: the paper's reference vs efficient series (GPU profiles)"

METHODS: list[Departure] = [
    Departure(
        study="attribution",
        item="precision and attention kernel",
        original="fp16 weights, attn_implementation='eager', for every method (rtc load_model_balanced)",
        efficient="the plan's dtype (bfloat16 on timing/full) and transformers' default kernel (sdpa)",
        why="bf16 does not overflow in long attention sums; sdpa never materializes [H, T, T] weights",
        effect="values: fixture model in fp16 (CPU) vs the original's fp32 output, max diff 0.17% (IG), 0.18% "
        "(attention×IG), 0.15% (AttnLRP), 0.56% (perturbation), 0.51% (CLP), 0.77% (ReAGent) of the max; "
        f"{_TIME}; reference cells run fp16 + eager (fp32 + eager on smoke)",
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
        item="input tokenization inside the timed call",
        original="every calculate_* call starts with target_response: the chat template, three tokenizations and "
        "their offset strings, inside the timed region (attention×IG twice)",
        efficient="-",
        why="both protocols build the inputs once per cell before timing (the worker), for every method alike",
        effect="reference_inputs_to_length on this CPU (tiny BPE): 0.02 s at P = G = 10, 0.26 s at P = 10000 "
        "(tiling included): the reference times are short by that much",
        protocol="reference",
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

DEPARTURES += INPUTS + METHODS + ROUTING
