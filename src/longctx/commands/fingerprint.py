"""`longctx fingerprint`: print this machine's fingerprint JSON (identity + observed telemetry)."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("fingerprint", help="print this machine's fingerprint JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from longctx.provenance import fingerprint

    print(json.dumps(fingerprint(), indent=1, default=str))
    return 0
