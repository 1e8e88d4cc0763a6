"""The streaming study's departures from the original (3cb8e4b / 254e749); see ``longctx.departures``.

Effects on PPL are measured on the smoke model (tiny GPT-NeoX, 2,000 tokens of the smoke PG19 text, C_total =
256, S = 4, R = 8; σ = 16 where the prefill matters) by ``scripts/measure_streaming_quirks.py``: the reference
protocol with the quirk on vs off (everything else as the reference protocol does it), in fp32 and in fp16 on
CPU. With every quirk off the reference protocol scores exactly what the efficient one does (test). The sizes
are a tiny model's (4 rotary dims, 2 layers); they show direction and order, not the size at 2.8B parameters.
"""

from __future__ import annotations

from longctx.departures import Departure

SMOKE = "smoke, reference protocol, quirk on vs off: "

DEPARTURES: list[Departure] = [
    Departure(
        study="streaming",
        item="prefill length",
        original="P = min(C_total, N): with σ > 0 the prefill fills the whole budget, and the first update may "
        "prune right after it (σ ≥ R)",
        efficient="P = min(C, N) with C = S + W (the definition)",
        why="the spec defines the prefill by the capacity C",
        effect=SMOKE + "acts only when σ > R (a C_total prefill is cut harder at once): σ = 16, R = 8: PPL 226.813 "
        "vs 227.159 (−0.15 %, fp32); none for σ ≤ R (test)",
    ),
    Departure(
        study="streaming",
        item="first decode step",
        original="the prefill scores x_1 … x_{P−1}; the decode loop starts at pos = P − 1, so x_{P−1} enters the "
        "cache a second time and N − P steps are timed",
        efficient="the prefill scores x_1 … x_P; step t = P … N−2 feeds x_t (N − 1 − P steps)",
        why="every token fed once (the definition)",
        effect=SMOKE + "strict 227.546 vs 227.648 (−0.045 %), Lazy 227.326 vs 227.264 (+0.027 %, the prune phase "
        "shifts by one step), fp32; strict: tokens differ only while the duplicate or keys computed beside it are "
        "cached (test)",
    ),
    Departure(
        study="streaming",
        item="key re-rotation",
        original="each prune re-rotates every kept non-sink key in place from its current value by −(entries "
        "dropped); cos/sin cast to the key dtype and the rotation done in fp16, so rotations accumulate (strict: "
        "≈ 2,000 per key; sinks never)",
        efficient="fast cache: recent keys keep their rotation, sinks re-rotated from stored copies by one integer "
        "offset in fp32 (plain cache: every key from its as-fed copy); never accumulated",
        why="the spec forbids accumulating small fp16 rotations (their error grows with the number of prunes)",
        effect=SMOKE + "fp16: strict 227.382 vs 227.532 (−0.07 %), Lazy 227.338 vs 227.298 (+0.02 %); none in fp32. "
        "Fp16 emulation of Pythia's 20 rotary dims after 2,016 rotations: 32 % mean error (notes)",
    ),
    Departure(
        study="streaming",
        item="loss dtype",
        original="cross-entropy on the model-dtype (fp16) logits: everywhere at 3cb8e4b as committed; with 254e749's "
        "--fp32-loss in fp32 except the baseline's prefill; the prefill loss is one rounded fp16 sum. Which mode "
        "ran is not recorded",
        efficient="fp32 log_softmax for every token",
        why="the spec calls the fp16 prefill loss a mistake; the reference protocol offers both historical modes "
        "(--reference-loss, default fp32_except_baseline_prefill)",
        effect=SMOKE + "fp16 baseline prefill loss: recompute 226.548 vs 226.424 (+0.055 %); model_dtype mode vs "
        "the default: strict 227.509 vs 227.382 (+0.056 %), Lazy 227.461 vs 227.338 (+0.054 %); none in fp32",
    ),
    Departure(
        study="streaming",
        item="PPL arithmetic",
        original="per-call loss sums added into a Python float (.item() each step); PPL = exp of the mean as an "
        "fp32 tensor",
        efficient="per-token fp32 NLL kept on the device, mean in float64, math.exp",
        why="no host sync inside the timed loop; full precision",
        effect="smoke fp32 recompute (no other quirk acts): 226.4471 vs 226.4472 (4e-7 relative)",
    ),
    Departure(
        study="streaming",
        item="positions",
        original="no position ids: the model uses cache indices (pos-shift semantics)",
        efficient="fast cache: position = slot + shift starting at −A (same query–key distances, other absolute "
        "angles), rebased every ~A steps; plain cache and reference: cache indices",
        why="O(S) prunes without re-rotating the recent block",
        effect="none beyond rounding: ≤ 1e-5 per-token NLL vs a slow float64 rendering of the definition (tests)",
    ),
    Departure(
        study="streaming",
        item="per-step cache work",
        original="DynamicCache: a torch.cat copy of the whole cache per layer every step; per prune, a copy of the "
        "kept entries into per-layer buffers of C_total entries (allocated at the first prune) and the in-place "
        "re-rotation above",
        efficient="fast cache: preallocated slots, no per-step copy, O(S) work per prune (plain cache: "
        "slice-and-concatenate with fp32 re-rotation from stored originals)",
        why="the artifact asks whether Lazy Pruning's speedup survives an efficient cache",
        effect="TPOT only (no effect on PPL); the reference protocol's TPOT measures the original's work: not yet "
        "measured on a GPU",
    ),
    Departure(
        study="streaming",
        item="per-step host work",
        original="loss.item() (a host sync) every step, the wrapper's Python update and a tqdm bar, all inside the "
        "timed loop",
        efficient="NLL accumulated on the device, no sync, progress bar throttled",
        why="time the decode step, not the bookkeeping",
        effect="TPOT only; not yet measured on a GPU",
    ),
    Departure(
        study="streaming",
        item="timing boundaries",
        original="CUDA events: prefill = forward + loss + sync + first prune (streaming) or the forward alone "
        "(baseline: its prefill loss lands in decode time); decode = total − prefill; first token = the first "
        "decode forward alone",
        efficient="prefill = forward + NLL; decode from the end of the prefill to the last step; first token = the "
        "first step including its NLL",
        why="one boundary for every method",
        effect="TPOT and first-token latency only; not yet measured on a GPU",
    ),
    Departure(
        study="streaming",
        item="baseline forward",
        original="the recompute baseline computes the logits of all 2,048 window positions every step",
        efficient="logits_to_keep=1: the LM head for the last position only",
        why="the other 2,047 logits are never used",
        effect="TPOT of the baseline only (≈ 0.5 TFLOP of LM head per step, ≈ 5 % of the step: estimate, not yet "
        "measured); PPL identical",
    ),
    Departure(
        study="streaming",
        item="refresh (B > 0)",
        original="refreshed entries picked by rounding linspace(S, start − 1, B), deduplicated",
        efficient="B evenly spaced bin centres of the dropped span; the reference protocol refuses B > 0",
        why="no published run refreshed (B = 0 in every file); bin centres are distinct by construction",
        effect="none on any published number",
    ),
    Departure(
        study="streaming",
        item="σ/δ rule",
        original="3cb8e4b: target min(max(len − δ, C_soft), C_total) if δ > 0 else C_soft (δ is a no-op at σ = 0); "
        "but delta8 and sigma8–64 were produced by 254e749's uncommitted cooldown/safe-target rule",
        efficient="the 3cb8e4b rule in both protocols",
        why="the spec's rule and the committed code agree; the other rule was never committed with the results",
        effect="the published delta8 and sigma8–64 PPLs are not reproducible by either protocol (A3 is consistent "
        "with the 3cb8e4b rule only)",
        protocol="reference",
    ),
    Departure(
        study="streaming",
        item="sweep and ablation grids",
        original="σ sweep at δ = 32; δ sweep at σ = 16 (δ 0, 8) and σ = 0 (δ 16–64); ablations A2 σ = 16, A3 σ = 16 "
        "δ = 32; no sink ablation (stale files reused with other settings)",
        efficient="ablations A2, A3 as published plus a sink ablation; σ sweep at δ = 0; δ sweep at σ = 0 as "
        "published (it repeats the Lazy row, detected from the measured prune schedules) and again at σ = 16, "
        "where δ acts",
        why="one knob per sweep, the others at the main-table values",
        effect="the σ sweep and the σ = 16 δ rows are not comparable to the published rows one by one",
        protocol="both",
    ),
    Departure(
        study="streaming",
        item="R = 0",
        original="runs and never prunes, beyond 2,048 positions",
        efficient="refused where the stream exceeds the model's max_position_embeddings (both protocols)",
        why="positions beyond the trained context",
        effect="none on any published number (no run used R = 0)",
        protocol="both",
    ),
    Departure(
        study="streaming",
        item="PG19 book",
        original="prepare_pg19_samples.py: the first PG19 test book (dataset order) whose stripped text has ≥ "
        "50,000 tokens; the book is not recorded",
        efficient="the same preparation applied to the pinned book test/10321.txt, the one the seed names "
        "(Dragon's Blood)",
        why="the dataset order at the original's run cannot be replayed offline; the seed names the book",
        effect="none if the seed is right (not verifiable from the published files)",
        protocol="both",
    ),
    Departure(
        study="streaming",
        item="warm-up and repeats",
        original="no warm-up, one run per file (CUDA start-up costs land in prefill and first token)",
        efficient="the plan's warm-up and repeats for both protocols (full: 1 and 3; n, mean, std, CI reported)",
        why="single cold runs do not give an uncertainty",
        effect="first-token latency and prefill time lose the cold-start cost; PPL identical per repeat",
        protocol="both",
    ),
    Departure(
        study="streaming",
        item="peak memory",
        original="torch.cuda.max_memory_allocated after a reset at the start of the decode function, weights "
        "included, MiB",
        efficient="allocated and reserved peaks, with and without weights, bytes (one probe for both protocols)",
        why="reserved memory is what another process could not use",
        effect="none on the allocated figure (the original's quantity); the reference protocol's buffers and "
        "per-step copies are in it",
        protocol="both",
    ),
    Departure(
        study="streaming",
        item="speedup",
        original="the result files' speedup = baseline runtime / method runtime (prefill included), some against "
        "an older baseline run (98.01 / 97.34 ms)",
        efficient="baseline TPOT / method TPOT, against the baseline of the same dataset, protocol and machine",
        why="the spec's definition; no stale baselines",
        effect="published PG19: 5.0006× vs 5.0041× (strict), 6.8072× vs 6.8143× (Lazy): +0.07 % / +0.10 %",
        protocol="both",
    ),
    Departure(
        study="streaming",
        item="framework check",
        original="pg19/wikitext_ours_framework_only: the strict run again through the MIT StartRecentKVCache",
        efficient="not repeated",
        why="the same slice path: the published PPLs are bit-identical (20.180685, 9.496406)",
        effect="none (TPOT 20.04 vs 19.57 ms in the original: run-to-run spread)",
        protocol="both",
    ),
    Departure(
        study="streaming",
        item="software stack",
        original="transformers 4.57.3, torch 2.9.1, DynamicCache, one A800 80GB",
        efficient="transformers 5.x Cache subclasses, torch 2.13 (the pinned lock)",
        why="the artifact pins a current stack; the original's is recorded in its result files",
        effect="not measured (needs a GPU); on CPU in fp32 the reference protocol reproduces the original code's "
        "per-token NLL exactly (fixture test)",
        protocol="both",
    ),
]
