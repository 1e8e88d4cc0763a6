"""``python -m longctx.executors.worker REPLY_FD``: a local worker of ``longctx run --jobs N``.

It reads one task per line on stdin (a cell and the run's context as JSON), measures it through the result store
(``longctx.executors.cells.execute_cell``: assess, claim, measure, release) and answers with one JSON outcome per
line on the file descriptor it was given (its stdout and stderr are its log). It dies with the runner that
started it (``longctx.executors.process``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import traceback

from longctx.executors.cells import FAILED, Outcome, RunContext, Task, execute_cell
from longctx.executors.claims import ClaimStore


def serve(requests, reply) -> None:
    """Answer every request line of ``requests`` with one outcome line on ``reply``."""
    stores: dict[str, ClaimStore] = {}
    for line in requests:
        if not line.strip():
            continue
        request = json.loads(line)
        task, ctx = Task.from_json(request["task"]), RunContext(**request["ctx"])
        try:
            store = stores.setdefault(ctx.results_dir, ClaimStore(ctx.results_dir))
            outcome = execute_cell(task, ctx, store, debug=True)
        except Exception as exc:  # noqa: BLE001 - one bad cell must not take the worker (and its queue) down
            traceback.print_exc()
            outcome = Outcome(task.cell.id, FAILED, f"{type(exc).__name__}: {exc}".splitlines()[0])
        reply.write(json.dumps(dataclasses.asdict(outcome)) + "\n")
        reply.flush()


def main(argv: list[str] | None = None) -> int:
    (reply_fd,) = argv if argv is not None else sys.argv[1:]
    with os.fdopen(int(reply_fd), "w", encoding="utf-8") as reply:
        serve(sys.stdin, reply)
    return 0


if __name__ == "__main__":
    sys.exit(main())
