"""`longctx bench streaming|attribution|all`: the performance benchmarks (timing shapes on GPU; on CPU tiny
shapes and the streaming timing architecture in fp32)."""

from __future__ import annotations

import dataclasses

from longctx.errors import UsageError


def register(sub) -> None:
    p = sub.add_parser("bench", help="performance benchmarks; writes results/bench/<name>_<gpu>.json")
    p.add_argument("which", choices=("streaming", "attribution", "all"))
    p.add_argument(
        "--shapes",
        choices=("auto", "timing", "cpu"),
        default="auto",
        help="timing: the paper's architectures (streaming also on a CPU: fp32, short stream); cpu: tiny shapes "
        "(auto: timing on a GPU; on a CPU both, the attribution bench tiny only)",
    )
    p.add_argument("--out-dir", default="results/bench")
    p.set_defaults(func=run)


def _shapes(choice: str, which: str) -> tuple[list[str], list[str]]:
    """The shapes of the streaming bench and of the attribution bench to run, in order."""
    import torch

    gpu = torch.cuda.is_available()
    if choice == "auto":
        streaming, attribution = (["timing"], ["timing"]) if gpu else (["cpu", "timing"], ["cpu"])
    else:
        streaming = attribution = [choice]
    if "timing" in attribution and not gpu and which in ("attribution", "all"):
        raise UsageError("attribution --shapes timing needs a CUDA GPU (Qwen3-8B shapes); use --shapes cpu")
    return (streaming if which != "attribution" else []), (attribution if which != "streaming" else [])


def _name(study: str, shapes: str, gpu: bool) -> str:
    """``streaming`` for the device's own shapes (timing on a GPU, cpu on a CPU), else ``streaming_<shapes>``."""
    return study if shapes == ("timing" if gpu else "cpu") else f"{study}_{shapes}"


def run(args) -> int:
    import torch

    from longctx.bench.report import write_bench
    from longctx.provenance import utc_now

    gpu = torch.cuda.is_available()
    streaming, attribution = _shapes(args.shapes, args.which)
    for shapes in streaming:
        from longctx.bench.streaming import bench_config, run_streaming_bench

        cfg = bench_config(shapes, "cuda" if gpu else "cpu")
        started = utc_now()
        metrics = run_streaming_bench(cfg)
        path = write_bench(_name("streaming", shapes, gpu), dataclasses.asdict(cfg), metrics, started, args.out_dir)
        _print_streaming(metrics, path)
    for shapes in attribution:
        from longctx.bench.attribution import run_attribution_bench

        started = utc_now()
        cfg, metrics = run_attribution_bench(shapes, args.out_dir)
        path = write_bench(_name("attribution", shapes, gpu), cfg, metrics, started, args.out_dir)
        print(f"flashtrace_5000_sec: {metrics.get('flashtrace_5000_sec')}  ->  {path}")
    return 0


def _print_streaming(metrics: dict, path) -> None:
    bandwidth = metrics["bandwidth"]
    print(
        f"weight-streaming floor {metrics['hbm_floor_ms']:.3f} ms/token "
        f"({bandwidth['bytes_per_s'] / 1e9:.1f} GB/s read; copy {bandwidth['copy']['bytes_per_s'] / 1e9:.1f} GB/s)"
    )
    for label, v in metrics["variants"].items():
        speedup = v["speedup_vs_recompute"]
        print(
            f"  {label:22s} TPOT {v['tpot_ms']['mean']:9.3f} ms  {v['ratio_to_floor']:7.2f}x floor  "
            + (f"{speedup:6.2f}x vs recompute  " if speedup else "")
            + f"peak {v['peak_mem']['allocated_bytes']['mean'] / 2**20:.1f} MiB"
        )
    for method, ratio in metrics["compiled_vs_eager"].items():
        print(f"  {method}: eager / compiled TPOT {ratio:.2f}")
    print(f"-> {path}")
