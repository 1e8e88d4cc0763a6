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
        "gradients and leaves about 16.4 GB of .grad allocated for every later method of the process",
        efficient="parameters frozen at load (both protocols)",
        why="attribution needs input gradients only; stale gradients would charge one method's memory to the next",
        effect="the original's allocated peaks after its first IG run carry the stale gradients: about 32.2 GB "
        "instead of 16.4 GB at rest (out-1), IFR and FlashTrace included",
        protocol="both",
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

DEPARTURES += INPUTS + ROUTING
