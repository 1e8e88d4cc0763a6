"""`longctx bench streaming|attribution|all`: the performance benchmarks (timing shapes on GPU, small on CPU)."""

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
        help="timing: the paper's architectures on a GPU; cpu: tiny shapes (auto: by device)",
    )
    p.add_argument("--out-dir", default="results/bench")
    p.set_defaults(func=run)


def _shapes(choice: str) -> str:
    import torch

    if choice == "auto":
        return "timing" if torch.cuda.is_available() else "cpu"
    if choice == "timing" and not torch.cuda.is_available():
        raise UsageError("--shapes timing needs a CUDA GPU (Pythia-2.8B / Qwen3-8B shapes); use --shapes cpu")
    return choice


def run(args) -> int:
    from longctx.bench.report import write_bench
    from longctx.provenance import utc_now

    shapes = _shapes(args.shapes)
    if args.which in ("streaming", "all"):
        from longctx.bench.streaming import CPU_SHAPES, StreamingBenchConfig, run_streaming_bench

        cfg = StreamingBenchConfig(**(CPU_SHAPES if shapes == "cpu" else {}))
        started = utc_now()
        metrics = run_streaming_bench(cfg)
        path = write_bench("streaming", dataclasses.asdict(cfg), metrics, started, args.out_dir)
        _print_streaming(metrics, path)
    if args.which in ("attribution", "all"):
        from longctx.bench.attribution import run_attribution_bench

        started = utc_now()
        cfg, metrics = run_attribution_bench(shapes, args.out_dir)
        path = write_bench("attribution", cfg, metrics, started, args.out_dir)
        print(f"flashtrace_5000_sec: {metrics.get('flashtrace_5000_sec')}  ->  {path}")
    return 0


def _print_streaming(metrics: dict, path) -> None:
    print(
        f"weight-streaming floor {metrics['hbm_floor_ms']:.3f} ms/token "
        f"({metrics['bandwidth']['bytes_per_s'] / 1e9:.1f} GB/s copy bandwidth)"
    )
    for label, v in metrics["variants"].items():
        print(
            f"  {label:22s} TPOT {v['tpot_ms']['mean']:9.3f} ms  {v['ratio_to_floor']:7.2f}x floor  "
            f"{v['speedup_vs_recompute']:6.2f}x vs recompute"
        )
    print(f"-> {path}")
