#!/usr/bin/env python3
"""Measure what each quirk of the original streaming code path does to PPL on the smoke model.

For each method of the smoke plan (its budget: C_total = 256, S = 4, R = 8, and σ = 16 > R for the prefill
quirk) and each dtype (fp32; fp16 on CPU, where the dtype quirks act), it scores the smoke PG19 text
(2,000 tokens) with the efficient protocol, the reference protocol, the reference protocol with one quirk
turned off at a time, and with every quirk off (which is the definition). The departures table
(``longctx/streaming/departures.py``) quotes these numbers. Run from the repository root:

    longctx models make-tiny assets/tiny       # the smoke models (seeded), if not there yet
    OMP_NUM_THREADS=1 python scripts/measure_streaming_quirks.py --tiny assets/tiny --out quirks.json

Prints one line per run and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from longctx.data.samples import write_smoke_text
from longctx.models import load_causal_lm
from longctx.streaming.config import StreamingEvalConfig, resolve_budget
from longctx.streaming.evaluator import evaluate_stream
from longctx.streaming.reference_loop import Quirks, evaluate_reference

OFF = {
    "prefill_cap_total": {"prefill_cap_total": False},
    "refeed_last_prefill_token": {"refeed_last_prefill_token": False},
    "rotation_in_key_dtype": {"rotation_in_key_dtype": False},
    "loss": {"loss": "fp32"},
}
ALL_OFF = Quirks(prefill_cap_total=False, refeed_last_prefill_token=False, rotation_in_key_dtype=False, loss="fp32")
CASES = {
    "recompute": dict(method="recompute", cap_total=256),
    "strict": dict(method="start_recent", n_sink=4, cap_total=256),
    "lazy": dict(method="lazy", n_sink=4, cap_total=256, compress_every=8),
    "lazy_sigma16": dict(method="lazy", n_sink=4, cap_total=256, compress_every=8, cache_slack=16),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", default="assets/tiny", help="directory of `longctx models make-tiny`")
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--dtypes", default="float32,float16", help="comma-separated model dtypes")
    parser.add_argument("--out", default="quirks.json")
    args = parser.parse_args()
    text = write_smoke_text(Path(args.out).with_suffix(".text.json"), 3000, 19)  # the smoke plan's pg19 text
    rows = []
    for dtype in args.dtypes.split(","):
        loaded = load_causal_lm(str(Path(args.tiny) / "tiny-gpt-neox"), dtype=dtype, device="cpu")
        ids = torch.tensor(loaded.tokenizer(json.loads(text.read_text())["text"])["input_ids"][: args.tokens])
        for case, knobs in CASES.items():
            budget = resolve_budget(StreamingEvalConfig(model="m", text_file="t", max_eval_tokens=ids.numel(), **knobs))
            variants = {"efficient": None, "reference": Quirks(), "all quirks off": ALL_OFF,
                        "reference, model_dtype loss": Quirks(loss="model_dtype")}  # fmt: skip
            variants |= {f"reference, {name} off": dataclasses.replace(Quirks(), **off) for name, off in OFF.items()}
            for name, quirks in variants.items():
                start = time.perf_counter()
                if quirks is None:
                    run = evaluate_stream(loaded.model, ids, budget, "fast")
                    ppl = float(torch.exp(run.nll.double().mean()))
                else:
                    run = evaluate_reference(loaded.model, ids, budget, quirks)
                    ppl = run.ppl
                row = {"dtype": dtype, "case": case, "variant": name, "ppl": ppl, "tpot_ms": run.tpot_ms,
                       "seconds": time.perf_counter() - start}  # fmt: skip
                rows.append(row)
                print(f"{dtype:8} {case:13} {name:40} ppl {ppl:10.4f}  tpot {run.tpot_ms or 0:7.3f} ms", flush=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
