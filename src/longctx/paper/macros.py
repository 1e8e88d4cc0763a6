"""Generated preamble files: numbers quoted in the text (macros.tex), the profile mark (profile.tex) and the
measurement environment from the results' fingerprint identity (environment.tex).
"""

from __future__ import annotations

from longctx.paper.attribution_tables import CURVES
from longctx.paper.latex import MISSING, escape, fmt_fixed, fmt_sig, macro_name, mark
from longctx.paper.render import render
from longctx.paper.store import ResultView
from longctx.paper.streaming_tables import delta_ppl, ppl, speedup, tpot

METHOD_MACRO = {"recompute": "Baseline", "start_recent": "Strict", "lazy": "Lazy"}
PROTOCOL_PREFIX = {"efficient": "", "reference": "Ref"}
PROFILE_MARKS = {
    "smoke": "smoke profile --- not paper numbers",
    "timing": "timing profile --- random weights: speed/memory only",
    "full": "",
}
FLASHTRACE, IFR = "ifr_multi_hop", "ifr_all_positions"
DATASETS = ("pg19", "wikitext")


def _method_macro(method: str, protocol: str) -> str:
    """``Lazy`` (efficient protocol) or ``RefLazy`` (reference protocol)."""
    name = METHOD_MACRO.get(method, method)
    return PROTOCOL_PREFIX[protocol] + name


def streaming_macros(view: ResultView) -> list[tuple[str, str]]:
    """Per main-table cell: TPOT, PPL, speedup and ΔPPL, e.g. ``\\LazySpeedupPGnineteen`` (efficient protocol) and
    ``\\RefLazySpeedupPGnineteen`` (reference protocol)."""
    out = []
    for cell in view.group("main"):
        protocol = cell.config.get("protocol", "efficient")
        dataset, method = cell.labels["dataset"], _method_macro(cell.config["method"], protocol)
        result = view.get(cell)
        base_cell = view.baseline_cell(dataset, protocol=protocol)
        baseline = view.get(base_cell) if base_cell else None
        ratio = speedup(result, baseline)
        summary = tpot(result)
        out += [
            (macro_name(method, "TPOT", dataset), mark(fmt_sig(summary and summary.mean, 3), result)),
            (macro_name(method, "PPL", dataset), mark(fmt_fixed(ppl(result), 2), result)),
            (macro_name(method, "Speedup", dataset), mark(fmt_fixed(ratio, 2), result, baseline)),
            (
                macro_name(method, "DeltaPPL", dataset),
                mark(fmt_fixed(delta_ppl(result, baseline), 2, sign=True), result, baseline),
            ),
        ]
    return out


def plan_macros(view: ResultView) -> list[tuple[str, str]]:
    """The configured budget of the main table (plan data, not measurements), so the text never retypes it."""
    lazy = next((c for c in view.group("main") if c.config["method"] == "lazy"), None)  # knobs: same in both protocols
    if lazy is None:
        return []
    return [
        ("CapTotal", str(lazy.config["cap_total"])),
        ("NSink", str(lazy.config["n_sink"])),
        ("LazyR", str(lazy.config["compress_every"])),
    ]


def _comparable(fast, slow) -> bool:
    """Both measured (status ok) on the same fingerprint identity: their time ratio means something."""
    if fast is None or slow is None:
        return False
    return fast.status == slow.status == "ok" and fast.identity_hash == slow.identity_hash


FLASHTRACE_MACROS = ("FlashTraceVsIFRSpeedup", "FlashTraceVsIFROutputLen", "FlashTraceTime", "IFRTime")
# the paper's claims about the original methods' cost quote the reference protocol (the original's code path)
PROTOCOL_SUFFIX = {"reference": "", "efficient": "Efficient"}


def flashtrace_macros(view: ResultView, protocol: str) -> list[tuple[str, str]]:
    """FlashTrace vs IFR (all positions) of one protocol at the longest output length where both measured a
    time; names carry ``PROTOCOL_SUFFIX[protocol]``."""
    curve = CURVES[0]
    names = [name + PROTOCOL_SUFFIX[protocol] for name in FLASHTRACE_MACROS]
    group = [c for c in view.group(curve.group) if c.config.get("protocol", "efficient") == protocol]
    cells = {(c.config["method"], c.config[curve.varies]): c for c in group}
    both_ok = []
    for (method, length), cell in cells.items():
        other = cells.get((IFR, length))
        if method == FLASHTRACE and other is not None:
            fast, slow = view.get(cell), view.get(other)
            if _comparable(fast, slow):
                both_ok.append((length, fast, slow))
    if not {FLASHTRACE, IFR} <= {c.config["method"] for c in group}:
        return []  # the plan does not compare them (\notinplan)
    if not both_ok:
        return [(name, MISSING) for name in names]
    length, fast, slow = max(both_ok, key=lambda item: item[0])
    t_fast, t_slow = fast.metrics.time_sec.mean, slow.metrics.time_sec.mean
    values = [mark(fmt_sig(t_slow / t_fast, 3), fast, slow), str(length), mark(fmt_sig(t_fast, 3), fast)]
    return list(zip(names, [*values, mark(fmt_sig(t_slow, 3), slow)], strict=True))


def expected_macro_names() -> list[str]:
    """Every macro main.tex may quote, so a plan without a study (STUDIES=...) still compiles."""
    names = ["CapTotal", "NSink", "LazyR"]
    for dataset in DATASETS:
        for method in METHOD_MACRO:
            for protocol in PROTOCOL_PREFIX:
                name = _method_macro(method, protocol)
                names += [macro_name(name, q, dataset) for q in ("TPOT", "PPL", "Speedup", "DeltaPPL")]
    return names + [name + suffix for suffix in PROTOCOL_SUFFIX.values() for name in FLASHTRACE_MACROS]


def macros_tex(view: ResultView) -> str:
    """The macros file; a quoted number whose cell is not in this plan prints as ``\\notinplan``."""
    flashtrace = [item for protocol in PROTOCOL_SUFFIX for item in flashtrace_macros(view, protocol)]
    macros = dict(plan_macros(view) + streaming_macros(view) + flashtrace)
    for name in expected_macro_names():
        macros.setdefault(name, r"\notinplan{}")
    return render("macros.tex.j2", profile=view.plan.profile, macros=list(macros.items()))


def profile_tex(view: ResultView) -> str:
    """``\\ProfileName`` and ``\\ProfileMark`` (a red banner on smoke and timing PDFs)."""
    plan = view.plan
    return render(
        "profile.tex.j2",
        profile=plan.profile,
        description=escape(plan.description),
        mark=PROFILE_MARKS.get(plan.profile, escape(plan.profile)),
    )


def _gpu_text(gpu: dict) -> list[str]:
    """GPU name × count, compute capability, memory, driver, CUDA driver (or why there is no GPU)."""
    if not gpu.get("available"):
        return [escape(f"none ({gpu.get('reason', 'not available')})")] + ["--"] * 4
    devices = gpu.get("devices", [])
    names = sorted({str(d.get("name")) for d in devices})
    memory = sorted(
        {d.get("memory_total_bytes") for d in devices if isinstance(d.get("memory_total_bytes"), int)}
    )
    return [
        escape(f"{', '.join(names)} × {gpu.get('count')}"),
        escape(", ".join(sorted({str(d.get("compute_capability")) for d in devices}))),
        escape(", ".join(f"{m / 2**30:.1f} GiB" for m in memory) or "--"),
        escape(str(gpu.get("driver_version"))),
        escape(str(gpu.get("cuda_driver_version"))),
    ]


ENV_FIELDS = (
    "GPU",
    "Compute capability",
    "GPU memory",
    "Driver",
    "CUDA driver",
    "torch",
    "CUDA (torch build)",
    "cuDNN",
    "transformers",
    "Python",
    "Platform",
    "CPU",
    "Code (git commit)",
)


def _environment_column(identity: dict, commits: list[str]) -> list[str]:
    stack = identity.get("torch_stack", {})
    packages = identity.get("packages", {})
    return _gpu_text(identity.get("gpu", {})) + [
        escape(str(stack.get("torch"))),
        escape(str(stack.get("cuda"))),
        escape(str(stack.get("cudnn"))),
        escape(str(packages.get("transformers"))),
        escape(str(identity.get("python"))),
        escape(str(identity.get("platform"))),
        escape(str(identity.get("cpu_model"))),
        r"\texttt{" + escape(", ".join(commits)) + "}",
    ]


def _commit(result) -> str:
    code = result.provenance.get("code_version", {})
    commit = (code.get("git_commit") or code.get("package_version") or "unknown")[:12]
    return commit + ("+dirty" if code.get("git_dirty") else "")


def environment_tex(view: ResultView) -> str:
    """One column per distinct fingerprint identity among the results (normally exactly one)."""
    by_hash: dict[str, tuple[dict, list[str]]] = {}
    results = view.results()
    for result in results:
        key = result.identity_hash
        identity, commits = by_hash.setdefault(key, (result.fingerprint.identity, []))
        if _commit(result) not in commits:
            commits.append(_commit(result))
    titles = [r"\texttt{" + key[:12] + "}" for key in by_hash]
    columns = [_environment_column(identity, commits) for identity, commits in by_hash.values()]
    rows = [[name, *(column[i] for column in columns)] for i, name in enumerate(ENV_FIELDS)]
    return render("environment.tex.j2", titles=titles, rows=rows, n_results=len(results))
