"""`longctx predict`: every cell of a plan predicted on meta tensors for a named GPU (peak memory, FLOPs, roofline).

``--compare-original`` predicts the original attribution experiment's measured cells instead and prints the
agreement (``--json``: the one object the issue asks for). ``STUDIES``, ``ATTR_FUNCS`` and
``ATTR_PROTOCOLS`` restrict the plan as they do for ``longctx run``.
"""

from __future__ import annotations

import json
import os
import sys
import time

from longctx.errors import UsageError

DEVICE_MAPS = ("balanced",)


def register(sub) -> None:
    p = sub.add_parser("predict", help="predict peak memory, FLOPs and a roofline time bound of every plan cell (CPU)")
    p.add_argument("--profile", default="full", help="smoke | timing | full (default: full)")
    p.add_argument("--gpu", default=None, help="GPU to predict for, e.g. H100-80GB, A800 (default: the visible one, "
                   "else H100-80GB)")  # fmt: skip
    p.add_argument("--gpus", type=int, default=None, help="spread each attribution model over N GPUs (a device map)")
    p.add_argument("--device-map", choices=DEVICE_MAPS, default="balanced", help="how N GPUs share a model")
    p.add_argument("--out", default=None, help="prediction JSON (default: results/predict/<profile>_<gpu>.json)")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: 2, or 1 on a 1-CPU machine)")
    p.add_argument("--compare-original", action="store_true", help="predict the original's measured cells instead")
    p.add_argument("--json", action="store_true", help="with --compare-original: print only the JSON object")
    p.set_defaults(func=run)


def resolve_gpu(name: str | None):
    """The named GPU's spec; without a name the visible GPU's, else the H100 SXM."""
    from longctx.predict.gpus import gpu_from_device_name, gpu_spec

    if name is not None:
        return gpu_spec(name)
    import torch

    if torch.cuda.is_available():
        visible = gpu_from_device_name(torch.cuda.get_device_name(0))
        if visible is not None:
            return visible
    return gpu_spec("H100-80GB")


def run(args) -> int:
    if args.gpus is not None and args.gpus < 1:
        raise UsageError(f"--gpus must be at least 1, got {args.gpus}")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {args.jobs}")
    if args.json and not args.compare_original:
        raise UsageError("--json goes with --compare-original (the plan prediction is always written as JSON)")
    gpu = resolve_gpu(args.gpu)
    if args.compare_original:
        return _compare(args)
    return _plan(args, gpu)


def _plan(args, gpu) -> int:
    from longctx.plan import load_plan
    from longctx.predict.plan import default_output, plan_record, predict_plan, table, timed
    from longctx.results import atomic_write_json

    plan = load_plan(args.profile)
    cells = plan.unique_cells()
    print(f"predicting {len(cells)} cells of the {plan.profile} plan for {gpu.name}"
          + (f" x{args.gpus} ({args.device_map})" if args.gpus else ""), file=sys.stderr)  # fmt: skip

    started = time.perf_counter()

    def progress(p: dict) -> None:
        elapsed = time.perf_counter() - started
        print(f"  [{elapsed:6.0f}s] {p['cell_id']} {p['status']} ({p['predict_seconds']:.1f}s)", file=sys.stderr,
              flush=True)  # fmt: skip

    jobs = _jobs(args)
    predictions, seconds = timed(lambda: predict_plan(cells, gpu, n_gpus=args.gpus, jobs=jobs, progress=progress))
    out = args.out or default_output(plan.profile, gpu, args.gpus)
    atomic_write_json(out, plan_record(plan.profile, gpu, args.gpus, predictions, seconds))
    print(table(predictions))
    print(f"{len(predictions)} cells predicted in {seconds:.0f} s; written to {out}")
    return 0


def _jobs(args) -> int:
    return args.jobs or min(2, os.cpu_count() or 1)


def _compare(args) -> int:
    from longctx.plan import plan_data, shared_settings
    from longctx.predict.compare import COMPARE_OUTPUT, compare_original, describe
    from longctx.results import atomic_write_json

    spec = plan_data("full.json")["attribution"]
    settings = {**shared_settings(spec, {}), "method_options": spec["method_options"]}

    def progress(p: dict) -> None:
        print(f"  {p['cell_id']} {p['status']} ({p['predict_seconds']:.1f}s)", file=sys.stderr, flush=True)

    summary, _ = compare_original(settings, jobs=_jobs(args), progress=progress)
    atomic_write_json(args.out or COMPARE_OUTPUT, summary)
    print(json.dumps(summary, indent=1) if args.json else describe(summary))
    return 0
