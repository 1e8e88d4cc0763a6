"""`longctx claims check [--profile P] [--json]`: every claim of the README's claims table against the results.

One line per claim (pass / FAIL / not measured / not comparable / reported) and a summary; exit 1 when a
claim fails, else 0. What an artifact reviewer runs after `make paper` (also `make check`).
"""

from __future__ import annotations

import json

from longctx.errors import RunFailure


def register(sub) -> None:
    claims = sub.add_parser("claims", help="the paper's claims, machine-checked")
    actions = claims.add_subparsers(dest="claims_command", required=True, parser_class=type(claims))
    p = actions.add_parser("check", help="check every claim against the selected profile's results")
    p.add_argument("--profile", default=None, help="smoke | timing | full (default: PROFILE or automatic)")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--json", action="store_true", help="print the outcomes as JSON")
    p.set_defaults(func=run_check)


def run_check(args) -> int:
    from longctx.claims_check import check_claims, summary
    from longctx.plan import load_plan, select_profile

    profile, why = select_profile(args.profile)
    plan = load_plan(profile)
    results_dir = f"{args.results_dir}/{profile}"
    outcomes = check_claims(plan, results_dir)
    counts = summary(outcomes)
    if args.json:
        print(json.dumps({"profile": profile, "results_dir": results_dir, "summary": counts,
                          "claims": [o.to_json() for o in outcomes]}, indent=1, ensure_ascii=False))  # fmt: skip
    else:
        print(f"profile: {profile} ({why}); results: {results_dir}")
        for outcome in outcomes:
            print(outcome.line())
        print(f"{len(outcomes)} claims: " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    if counts["FAIL"]:
        raise RunFailure(f"{counts['FAIL']} claim(s) failed")
    return 0
