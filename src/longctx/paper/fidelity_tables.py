"""The paper's fidelity tables: every departure from the original code (``longctx.departures``, the rows the
README shows too) and the claims check on this profile's results (``longctx.claims_check``).

Both are long, so both are ``longtable``s (they break across pages) rather than floats.
"""

from __future__ import annotations

from pathlib import Path

from longctx.claims import format_value
from longctx.claims_check import check_claims, expected_text
from longctx.departures import WHERE, Departure, all_departures
from longctx.paper.latex import escape
from longctx.paper.render import render
from longctx.plan import Plan


def _column(width: float) -> str:
    return rf">{{\raggedright\arraybackslash}}p{{{width}\linewidth}}"


def departures_tex(departures: list[Departure] | None = None) -> str:
    """Every departure, streaming first: what the original did, what the artifact does, why, and the effect."""
    departures = all_departures() if departures is None else departures
    rows = [
        [
            rf"{escape(d.study)}\newline\textbf{{{escape(d.item)}}}\newline\emph{{{escape(WHERE[d.protocol])}}}",
            escape(d.original),
            escape(d.efficient),
            escape(d.why),
            escape(d.effect),
        ]
        for d in departures
    ]
    return render(
        "longtable.tex.j2",
        source="longctx.departures",
        align="".join(_column(w) for w in (0.15, 0.21, 0.21, 0.18, 0.17)),
        caption="Every difference between this artifact and the original code (the README's departures table "
        "comes from the same rows). Effects on the smoke profile are measured on its tiny models; they show which "
        "way and how much a difference acts, not its size at 2.8B parameters.",
        label="tab:departures",
        header=["Study, item", "Original", "This artifact (efficient)", "Why", "Effect"],
        rows=rows,
    )


def claims_tex(plan: Plan, results_dir: str | Path) -> str:
    """One row per claim: protocol, the expected value (the original's unless a goal), measured value, status."""
    rows = []
    for outcome in check_claims(plan, results_dir):
        claim = outcome.claim
        rows.append(
            [
                r"\texttt{" + escape(claim.id) + r"}\newline " + escape(claim.statement),
                escape(claim.protocol),
                escape(expected_text(claim, outcome.expected, outcome.original)),
                escape(format_value(outcome.value, claim.unit)) if outcome.value is not None else "--",
                r"\textbf{" + escape(outcome.status) + "}",
            ]
        )
    return render(
        "longtable.tex.j2",
        source="longctx.claims via longctx claims check",
        align="".join(_column(w) for w in (0.42, 0.1, 0.2, 0.1, 0.1)),
        caption=f"Every claim of the README, checked on this build's ({escape(plan.profile)} profile) results by "
        r"\texttt{longctx claims check}. Expected values are the original's published numbers (with their "
        r"tolerance) unless the claim states a goal of this artifact; \emph{not comparable} marks numbers this "
        "profile or this hardware cannot speak to.",
        label="tab:claims",
        header=["Claim", "Protocol", "Expected", "Measured", "Status"],
        rows=rows,
    )
