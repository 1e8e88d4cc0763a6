#!/usr/bin/env python3
"""Check ``longctx attribution explain`` (default flags) against the ORIGINAL IFR code on the same token ids.

Issue #11's acceptance check: ``explain --method ifr_all_positions`` and ``--method ifr_multi_hop`` with default
flags must agree with ``ifr_core.compute_ifr_for_all_positions`` / ``ifr_core.compute_multi_hop_ifr`` within
1e-3 relative on a Qwen3-style model that is not in the repository.

Where the original code comes from: FlashTrace at commit 02ef4d3 (MIT licence), kept read-only in this workspace
at /work/shared/reference/flashtrace-02ef4d3 (``--original``). This script imports its ``ifr_core`` and
``llm_attr`` (for ``LLMIFRAttribution._capture_model_state``: the original's forward with attention maps and
its residual hooks) and copies none of their code. It is not part of the test suite: it needs the original
code and its environment (transformers 4.x).

Steps:

1. Unless ``--explain-dir`` already holds them, run ``longctx attribution explain --model M --method NAME
   --prompt-file F --out DIR/NAME.json`` for both methods with the project's interpreter (``--project-python``,
   ``PYTHONPATH=<repo>/src``) and nothing else on the command line: the default protocol, dtype and chunks.
2. In this interpreter (the original's environment), load the same weights with ``attn_implementation="eager"``
   in the dtype the explain result records, take the full sequence ``input_ids`` and ``prompt_len`` from the
   explain JSON, capture the original's model state, and call
   ``compute_ifr_for_all_positions(sink_range=(prompt_len, T - 1))`` (the sinks of
   ``calculate_ifr_for_all_positions``) and ``compute_multi_hop_ifr(sink = thinking span = (prompt_len, T - 1),
   n_hops=1)`` (the defaults of ``calculate_ifr_multi_hop``) with ``chunk_tokens``/``sink_chunk_tokens`` from
   the explain result.
3. Compare on the explain JSON's columns (``column_positions``): the all-positions rows with the explain
   matrix; ``observation["sum"]`` with the multi-hop matrix rows and with ``span.scores_by_position`` (every
   position), and each hop's ``token_importance_total`` with ``span.hops_by_position``. "Relative" is the max
   absolute difference over the max absolute reference value; every element must also satisfy
   ``|a - b| <= 1e-3 * |b| + 1e-3 * max|b|``. Exit 0 if all pass, 1 otherwise.

Environment used (the fixture script's scratch venv, see scripts/make_original_attribution_fixtures.py):

    /tmp/attr-ref/venv/bin/python scripts/check_explain_against_original.py \\
        --model /tmp/attr-routing/tiny/tiny-qwen3 --prompt-file PROMPT.txt --work /tmp/attr-routing/check \\
        --project-python /work/main/.venv/bin/python

A config written by transformers 5 (``rope_parameters``) is read into transformers 4's ``Qwen3Config`` with
the same RoPE theta; any other RoPE type is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
METHODS = ("ifr_all_positions", "ifr_multi_hop")
TOLERANCE = 1e-3


def run_explain(args, out_dir: Path) -> dict[str, dict]:
    """The explain JSON of each method (run with default flags unless already in ``out_dir``)."""
    results = {}
    for method in METHODS:
        out = out_dir / f"{method}.json"
        if not out.exists():
            cmd = [args.project_python, "-m", "longctx", "attribution", "explain", "--model", str(args.model),
                   "--method", method, "--prompt-file", str(args.prompt_file), "--out", str(out)]  # fmt: skip
            env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
            print("$", " ".join(cmd), flush=True)
            subprocess.run(cmd, env=env, check=True)
        results[method] = json.loads(out.read_text())
    return results


def load_original_model(model_dir: Path, dtype: str):
    """The same weights under transformers 4 with the original's kernel (eager)."""
    from transformers import AutoModelForCausalLM, Qwen3Config

    raw = json.loads((model_dir / "config.json").read_text())
    rope = raw.pop("rope_parameters", None)
    if rope is not None:
        if rope.get("rope_type", "default") != "default":
            sys.exit(f"unsupported RoPE parameters for transformers 4: {rope}")
        raw["rope_theta"] = rope["rope_theta"]
    config = Qwen3Config(**{k: v for k, v in raw.items() if k not in ("architectures", "transformers_version")})
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, config=config, torch_dtype=getattr(torch, dtype), attn_implementation="eager"
    )
    return model.eval()


def original_state(llm_attr, model, input_ids: list[int], chunk_tokens: int, sink_chunk_tokens: int):
    """The original's capture (one forward with attention maps + residual hooks) and its IFR parameters."""
    attributor = llm_attr.LLMIFRAttribution(model, None, chunk_tokens=chunk_tokens, sink_chunk_tokens=sink_chunk_tokens)
    ids = torch.tensor([input_ids], device=model.device)
    with torch.no_grad():
        cache, attentions, metadata, weight_pack = attributor._capture_model_state(ids, torch.ones_like(ids))
    return cache, attentions, weight_pack, attributor._build_ifr_params(metadata, len(input_ids))


def compare(label: str, ours, theirs) -> bool:
    ours = torch.as_tensor([[float("nan") if v is None else v for v in row] for row in ours], dtype=torch.float64)
    theirs = theirs.to(torch.float64)
    scale = float(theirs.abs().max())
    diff = (ours - theirs).abs()
    relative = float(diff.max()) / scale if scale > 0 else float(diff.max())
    ok = bool((diff <= TOLERANCE * theirs.abs() + TOLERANCE * scale).all()) and not torch.isnan(ours).any()
    print(f"{label}: shape {tuple(theirs.shape)}, max |diff| / max |original| = {relative:.3e}, "
          f"max |original| = {scale:.4g} -> {'ok' if ok else 'FAIL'}")  # fmt: skip
    return ok


def check(original: Path, results: dict[str, dict], model_dir: Path) -> bool:
    sys.path.insert(0, str(original))
    import ifr_core
    import llm_attr

    ok = True
    for method, record in results.items():
        ids, prompt_len = record["input_ids"], record["prompt_len"]
        details, cols = record["method_details"], torch.tensor(record["column_positions"])
        print(f"{method}: protocol={record['config']['protocol']} dtype={record['config']['dtype']} "
              f"T={len(ids)} prompt_len={prompt_len} G={len(record['generation_ids'])} details={details}")  # fmt: skip
        model = load_original_model(model_dir, record["config"]["dtype"])
        chunks = (details["chunk_tokens"], details["sink_chunk_tokens"])
        cache, attentions, pack, params = original_state(llm_attr, model, ids, *chunks)
        last = len(ids) - 1
        if method == "ifr_all_positions":
            out = ifr_core.compute_ifr_for_all_positions(cache, attentions, pack, params, sink_range=(prompt_len, last))
            ok &= compare(f"{method} matrix", record["matrix"], out.token_importance_matrix[:, cols])
        else:
            out = ifr_core.compute_multi_hop_ifr(
                prompt_len, last, (prompt_len, last), 1, cache, attentions, pack, params
            )
            vector = out.observation["sum"]
            rows = vector[cols].expand(len(record["matrix"]), -1)
            ok &= compare(f"{method} matrix", record["matrix"], rows)
            ok &= compare(f"{method} observation['sum'] (all positions)", [record["span"]["scores_by_position"]],
                          vector[None])  # fmt: skip
            for hop, raw in enumerate(out.raw_attributions):
                ok &= compare(f"{method} hop {hop} token_importance_total", [record["span"]["hops_by_position"][hop]],
                              raw.token_importance_total[None])  # fmt: skip
            print(f"{method} thinking ratios: explain {details['thinking_ratios']} original {out.thinking_ratios}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--original", type=Path, default=Path("/work/shared/reference/flashtrace-02ef4d3"))
    parser.add_argument("--model", type=Path, required=True, help="a Qwen3-style HF directory (not in the repo)")
    parser.add_argument("--prompt-file", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True, help="where the explain JSONs are written / read")
    parser.add_argument("--project-python", default=str(REPO / ".venv" / "bin" / "python"))
    args = parser.parse_args()
    if not (args.original / "ifr_core.py").exists():
        sys.exit(f"{args.original} is not the FlashTrace checkout (ifr_core.py missing)")
    torch.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    results = run_explain(args, args.work)
    ok = check(args.original.resolve(), results, args.model)
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
