"""``longctx claims check``: every claim of ``longctx.claims`` evaluated on one profile's results.

Each claim gets one status: ``pass`` / ``FAIL`` (measured value outside the tolerance, or its cell failed),
``not measured`` (no result yet: the missing cells and the command producing them), ``not comparable`` (the
profile cannot say, e.g. PPL of tiny or random-weight models, or an absolute time from other hardware;
the measured value is still shown) or ``reported`` (a question without an expected value). Results are read
through the typed models (``longctx.results``); published numbers through ``longctx.original``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from longctx.claims import CLAIMS, CellRef, Claim, OriginalRef, format_value
from longctx.plan import Plan
from longctx.results import StoredResult, read_result
from longctx.study import Cell

STATUSES = ("pass", "FAIL", "not measured", "not comparable", "reported")
PROFILE_LIMITS = {
    "smoke": "smoke profile: tiny models on synthetic text, not paper numbers",
    "timing": "timing profile: random weights, so perplexities mean nothing (speed and memory do)",
    "full": "full profile",
}


@dataclass(frozen=True)
class Reading:
    """What the metrics read from one measured result or one published record (None: not available)."""

    ppl: float | None = None
    tpot_ms: float | None = None
    time_s: float | None = None
    completed: bool | None = None
    peak_bytes: float | None = None
    maintenance_share: float | None = None


def measured_reading(result: StoredResult) -> Reading:
    m = result.metrics
    if result.study == "streaming":
        cache = m.cache
        share = None
        if cache.maintenance_ms and cache.forward_ms:
            total = cache.maintenance_ms.mean + cache.forward_ms.mean
            share = cache.maintenance_ms.mean / total if total > 0 else None
        return Reading(ppl=m.ppl, tpot_ms=m.tpot_ms.mean if m.tpot_ms else None, completed=True,
                       maintenance_share=share)  # fmt: skip
    return Reading(
        time_s=m.time_sec.mean,
        completed=result.status == "ok",
        peak_bytes=m.peak_mem.allocated_bytes.mean,
    )


def original_readings(ref: OriginalRef) -> list[Reading]:
    if ref.study == "streaming":
        from longctx.original.streaming import published_result

        return [Reading(ppl=r.ppl, tpot_ms=r.tpot_ms, completed=True) for r in map(published_result, ref.keys)]
    from longctx.original.attribution import original_cell

    readings = []
    for method, prompt, output in ref.keys:
        cell = original_cell(method, prompt, output)
        ok = cell is not None and cell.outcome == "ok"
        peak = cell.ok_peak_alloc_mean_gb * 1e9 if ok and cell.ok_peak_alloc_mean_gb is not None else None
        readings.append(Reading(time_s=cell.time_mean_s if ok else None, completed=ok, peak_bytes=peak))
    return readings


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _first(sets: list[list[Reading]], index: int, name: str) -> float | None:
    value = getattr(sets[index][0], name)
    return None if value is None else float(value)


def _max_ppl_gap(sets: list[list[Reading]]) -> float | None:
    anchor = sets[1][0].ppl
    values = [r.ppl for r in sets[0]]
    return None if anchor is None or None in values else max(abs(v - anchor) for v in values)


def _memory_growth(sets: list[list[Reading]]) -> float | None:
    high, mid, low = (_first(sets, i, "peak_bytes") for i in range(3))
    return None if None in (high, mid, low) else _ratio(high - low, mid - low)


METRICS: dict[str, Callable[[list[list[Reading]]], float | None]] = {
    "ppl": lambda s: _first(s, 0, "ppl"),
    "tpot_ms": lambda s: _first(s, 0, "tpot_ms"),
    "time_s": lambda s: _first(s, 0, "time_s"),
    "completed": lambda s: None if s[0][0].completed is None else float(s[0][0].completed),
    "maintenance_share": lambda s: _first(s, 0, "maintenance_share"),
    "tpot_ratio": lambda s: _ratio(_first(s, 0, "tpot_ms"), _first(s, 1, "tpot_ms")),
    "ppl_ratio": lambda s: _ratio(_first(s, 0, "ppl"), _first(s, 1, "ppl")),
    "time_ratio": lambda s: _ratio(_first(s, 0, "time_s"), _first(s, 1, "time_s")),
    "max_ppl_gap": _max_ppl_gap,
    "memory_growth": _memory_growth,
}


def original_value(claim: Claim) -> float | None:
    """The claim's metric on the original's published numbers (None when the original has none)."""
    if claim.original is None:
        return None
    return METRICS[claim.metric]([original_readings(ref) for ref in claim.original])


def expected_value(claim: Claim) -> float | None:
    return claim.target if claim.target is not None else original_value(claim)


@dataclass
class Outcome:
    """One claim's status on one profile's results."""

    claim: Claim
    status: str
    value: float | None = None
    expected: float | None = None
    original: float | None = None
    detail: str = ""
    missing: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"{self.status:<15} {self.claim.id}: {self.detail}"

    def to_json(self) -> dict:
        c = self.claim
        return {
            "id": c.id,
            "statement": c.statement,
            "status": self.status,
            "value": self.value,
            "expected": self.expected,
            "tolerance": c.tolerance.text() if c.tolerance else None,
            "original": self.original,
            "original_source": "; ".join(ref.describe() for ref in c.original) if c.original else None,
            "protocol": c.protocol,
            "profiles": list(c.profiles),
            "missing_cells": self.missing,
            "detail": self.detail,
        }


def matching_cells(plan: Plan, ref: CellRef) -> list[Cell]:
    """The plan's cells a reference names, in plan order (each id once)."""
    from longctx.studies import STUDIES

    seen, out = set(), []
    for cell in plan.cells:
        if cell.study != ref.study or cell.group != ref.group or cell.id in seen:
            continue
        typed = STUDIES[cell.study].config(cell.config)
        if all(cell.labels[k] == v if k in cell.labels else getattr(typed, k, None) == v for k, v in ref.where):
            seen.add(cell.id)
            out.append(cell)
    return out


def run_hint(cells: list[Cell], profile: str) -> str:
    """The command producing the missing cells: a slice of ``longctx run``, or the whole plan."""
    from longctx.commands.run import SLICES

    groups = {cell.group for cell in cells}
    names = sorted(name for name, part in SLICES.items() if part and groups & part)
    slices = " and ".join(f"`longctx run {name} --profile {profile}`" for name in names)
    return f"{slices} (or `make experiments PROFILE={profile}`)" if slices else f"`make experiments PROFILE={profile}`"


def _gpu_names(results: dict[str, StoredResult]) -> set[str]:
    names = set()
    for result in results.values():
        gpu = result.fingerprint.identity.get("gpu", {})
        names |= {str(d.get("name")) for d in gpu.get("devices", [])} if gpu.get("available") else {"no GPU"}
    return names


def expected_text(claim: Claim, expected: float | None, original: float | None) -> str:
    """``expected 20.318 ± 0.5 %``, ``expected ≥ 130 (original 132.59×)``, or ``no expected value``."""
    if claim.tolerance is None:
        return "no expected value"
    if claim.tolerance.kind in ("at_least", "at_most"):
        sign = "≥" if claim.tolerance.kind == "at_least" else "≤"
        text = f"expected {sign} {format_value(claim.tolerance.value, claim.unit)}"
    else:
        text = f"expected {format_value(expected, claim.unit)} {claim.tolerance.text()}"
    shown = expected if claim.tolerance.kind in ("relative", "absolute") else None
    if original is not None and original != shown:
        text += f"; original {format_value(original, claim.unit)}"
    return text


def evaluate(claim: Claim, plan: Plan, results_dir: Path) -> Outcome:
    """The claim's status on the plan's results under ``results_dir`` (the profile's result store)."""
    original, expected = original_value(claim), expected_value(claim)
    outcome = Outcome(claim, "not measured", expected=expected, original=original)
    wanted = expected_text(claim, expected, original)
    sets = [matching_cells(plan, ref) for ref in claim.cells]
    absent = [ref for ref, cells in zip(claim.cells, sets, strict=True) if not cells]
    if absent:
        if plan.profile not in claim.profiles:
            outcome.status, outcome.detail = "not comparable", f"{PROFILE_LIMITS[plan.profile]}; {wanted}"
        else:
            outcome.detail = f"no cell of the {plan.profile} plan is {absent[0].describe()}; {wanted}"
        return outcome
    cells = list({cell.id: cell for group in sets for cell in group}.values())
    results = {cell.id: read_result(results_dir / f"{cell.id}.json", warn=lambda _: None) for cell in cells}
    missing = [cell.id for cell in cells if results[cell.id] is None]
    if not missing:
        readings = [[measured_reading(results[cell.id]) for cell in group] for group in sets]
        outcome.value = METRICS[claim.metric](readings)
    measured = f"measured {format_value(outcome.value, claim.unit)}; " if outcome.value is not None else ""
    if plan.profile not in claim.profiles:
        outcome.status, outcome.detail = "not comparable", f"{PROFILE_LIMITS[plan.profile]}; {measured}{wanted}"
    elif missing:
        outcome.missing = missing
        outcome.detail = f"missing {', '.join(missing)}; produce with {run_hint(cells, plan.profile)}; {wanted}"
    elif claim.hardware_note or (claim.hardware and not any(claim.hardware in g for g in _gpu_names(results))):
        where = claim.hardware_note or f"an {claim.hardware}'s"
        gpus = ", ".join(sorted(_gpu_names(results)))
        outcome.status = "not comparable"
        outcome.detail = f"absolute number measured on {gpus}, the expected one is {where}; {measured}{wanted}"
    elif outcome.value is None:
        statuses = ", ".join(f"{cid}: {result.status}" for cid, result in results.items())
        outcome.status, outcome.detail = "FAIL", f"no value, a cell did not complete ({statuses}); {wanted}"
    elif claim.tolerance is None:
        outcome.status, outcome.detail = "reported", f"{format_value(outcome.value, claim.unit)} ({wanted})"
    else:
        outcome.status = "pass" if claim.tolerance.accepts(outcome.value, expected) else "FAIL"
        outcome.detail = f"{format_value(outcome.value, claim.unit)} ({wanted})"
    return outcome


def check_claims(plan: Plan, results_dir: str | Path, claims: tuple[Claim, ...] = CLAIMS) -> list[Outcome]:
    return [evaluate(claim, plan, Path(results_dir)) for claim in claims]


def summary(outcomes: list[Outcome]) -> dict[str, int]:
    return {status: sum(o.status == status for o in outcomes) for status in STATUSES}


def original_sources(claim: Claim) -> list[str]:
    """The original result files the claim's expected value is read from (through ``longctx.original``)."""
    if claim.original is None:
        return []
    from longctx.original.attribution import original_cell
    from longctx.original.streaming import published_result

    sources = []
    for ref in claim.original:
        for key in ref.keys:
            if ref.study == "streaming":
                record = published_result(key)
                sources.append(f"cs3602@{record.source.commit}:{record.source.path}")
            else:
                cell = original_cell(*key)
                sources.append(cell.source if cell else f"{ref.describe()} (never measured)")
    return list(dict.fromkeys(sources))


def _make_target(claim: Claim) -> str:
    if set(claim.profiles) == {"smoke", "timing", "full"}:
        return "`make paper` (any profile), `make check`"
    return f"`make paper PROFILE={' or '.join(reversed(claim.profiles))}`, `make check`"


def markdown_table(claims: tuple[Claim, ...] = CLAIMS) -> str:
    """The README's claims table: one row per claim, generated (``longctx docs``)."""
    rows = [
        "| claim | protocol | paper | make target | time, GPU, disk | expected value (tolerance) | from |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in claims:
        original = original_value(c)
        expected = expected_text(c, expected_value(c), original).removeprefix("expected ")
        source = "; ".join(original_sources(c)) if c.target is None else (c.target_source or "")
        if c.target is not None and c.original:
            source += " (original: " + "; ".join(original_sources(c)) + ")"
        if c.hardware:
            expected += f" (comparable on an {c.hardware} only)"
        if c.hardware_note:
            expected += f" (absolute time of {c.hardware_note}: reported, not compared)"
        cells = [f"`{c.id}`: {c.statement}", c.protocol, c.paper, _make_target(c), c.cost, expected, source or "–"]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"
