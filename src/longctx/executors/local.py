"""The local executor: cells on this machine, in this process (``--jobs 1``, as always) or N at once in worker
processes (``--jobs N``), one GPU each through ``CUDA_VISIBLE_DEVICES``, or on CPU with the cores shared out.

Whatever the number of workers, each cell is claimed in the result store before it is measured
(``longctx.executors.claims``). A cell another runner is measuring is set aside and, once everything else is done,
waited for (or, with ``wait_claimed=False``, reported as claimed); whatever that runner leaves undone is measured here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import selectors
import subprocess
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from longctx.errors import UsageError
from longctx.executors.cells import CLAIMED, FAILED, Outcome, RunContext, Task, execute_cell
from longctx.executors.claims import ClaimStore
from longctx.executors.process import python_module, spawn, stop

POLL_S = 2.0
QUIT_S = 5.0  # an idle worker's time to exit after its input ends
OnOutcome = Callable[[Outcome], bool]  # False: dispatch nothing more (cells in flight still finish)


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [g.strip() for g in given.split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def worker_environments(jobs: int, gpus_per_cell: int) -> list[dict[str, str]]:
    """The environment of each of ``jobs`` workers: one GPU each, or an equal share of the CPU cores."""
    if gpus_per_cell:
        gpus = visible_gpus()
        if gpus_per_cell > 1:
            raise UsageError(f"a cell asks for {gpus_per_cell} GPUs; --jobs N gives one GPU per cell: use --jobs 1")
        if jobs > len(gpus):
            raise UsageError(f"--jobs {jobs}: only {len(gpus)} GPU(s) visible, and each cell takes one")
        return [{**os.environ, "CUDA_VISIBLE_DEVICES": gpus[i]} for i in range(jobs)]
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    return [{**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)} for _ in range(jobs)]


class _ClaimedCells:
    """Cells another runner was measuring: announced once, looked at again when their claim is gone."""

    def __init__(self, claims: ClaimStore):
        self.claims, self.cells = claims, {}

    def add(self, task: Task, outcome: Outcome) -> None:
        print(f"waiting for {task.cell.id}: {outcome.detail}", flush=True)
        self.cells[task.cell.id] = task

    def free(self) -> list[Task]:
        """The set-aside cells whose claim no longer stands (done, given up or stale)."""
        ready = [t for cid, t in self.cells.items() if self.claims.live_holder(cid) is None]
        for task in ready:
            del self.cells[task.cell.id]
        return ready


class LocalExecutor:
    """Cells on this machine: ``jobs`` at once (1: in this process)."""

    name = "local"

    def __init__(self, jobs: int = 1, *, gpus_per_cell: int = 0, wait_claimed: bool = True, logs_dir: Path):
        self.jobs, self.gpus_per_cell, self.wait_claimed, self.logs_dir = jobs, gpus_per_cell, wait_claimed, logs_dir

    def run(self, tasks: list[Task], ctx: RunContext, on_outcome: OnOutcome) -> None:
        if not tasks:
            return
        claims = ClaimStore(ctx.results_dir)
        if self.jobs == 1:
            self._run_here(tasks, ctx, claims, on_outcome)
        else:
            _Pool(self, ctx, claims, on_outcome).run(tasks)

    def _run_here(self, tasks: list[Task], ctx: RunContext, claims: ClaimStore, on_outcome: OnOutcome) -> None:
        claimed, queue = _ClaimedCells(claims), deque(tasks)
        while queue or claimed.cells:
            if not queue:
                time.sleep(POLL_S)
                queue.extend(claimed.free())
                continue
            task = queue.popleft()
            outcome = execute_cell(task, ctx, claims, debug=bool(os.environ.get("LONGCTX_DEBUG")))
            if outcome.state == CLAIMED and self.wait_claimed:
                claimed.add(task, outcome)
            elif not on_outcome(outcome):
                return


class _Worker:
    """One worker process and the task it is measuring."""

    def __init__(self, index: int, env: dict[str, str], log_path: Path):
        self.index = index
        reply_read, reply_write = os.pipe()
        with log_path.open("a", encoding="utf-8") as log:
            self.proc = spawn(
                python_module("longctx.executors.worker", str(reply_write)),
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                pass_fds=(reply_write,),
                env=env,
                text=True,
            )
        os.close(reply_write)
        self.replies, self.buffer, self.task = reply_read, b"", None
        self.log_path = log_path

    def send(self, task: Task, ctx: RunContext) -> None:
        self.task = task
        self.proc.stdin.write(json.dumps({"task": task.to_json(), "ctx": dataclasses.asdict(ctx)}) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> list[Outcome] | None:
        """The outcomes that arrived (None: the worker is gone)."""
        data = os.read(self.replies, 1 << 16)
        if not data:
            return None
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        return [Outcome(**json.loads(line)) for line in lines if line.strip()]

    def close(self) -> int | None:
        """Let an idle worker finish (end of its input), end a busy or stuck one; its exit code."""
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        if self.task is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=QUIT_S)
        code = stop(self.proc)
        os.close(self.replies)
        return code


class _Pool:
    """N workers fed from one queue; a worker that dies fails its cell and is replaced."""

    def __init__(self, executor: LocalExecutor, ctx: RunContext, claims: ClaimStore, on_outcome: OnOutcome):
        self.executor, self.ctx, self.on_outcome = executor, ctx, on_outcome
        self.claimed = _ClaimedCells(claims)
        self.selector = selectors.DefaultSelector()
        self.envs = worker_environments(executor.jobs, executor.gpus_per_cell)
        executor.logs_dir.mkdir(parents=True, exist_ok=True)

    def _start(self, index: int) -> _Worker:
        worker = _Worker(index, self.envs[index], self.executor.logs_dir / f"local-worker-{index}.log")
        self.selector.register(worker.replies, selectors.EVENT_READ, worker)
        return worker

    def run(self, tasks: list[Task]) -> None:
        queue, stopping = deque(tasks), False
        workers = [self._start(i) for i in range(min(self.executor.jobs, len(tasks)))]
        try:
            while True:
                for worker in workers:
                    if worker.task is None and queue and not stopping:
                        worker.send(queue.popleft(), self.ctx)
                busy = [w for w in workers if w.task is not None]
                if not busy and (stopping or not (queue or self.claimed.cells)):
                    return
                for key, _ in self.selector.select(timeout=POLL_S):
                    stopping |= not self._collect(key.data, workers)
                if not stopping:
                    queue.extend(self.claimed.free())
        finally:
            for worker in workers:
                self.selector.unregister(worker.replies)
                worker.close()

    def _collect(self, worker: _Worker, workers: list[_Worker]) -> bool:
        """Handle what ``worker`` said (or its death); False when the run should dispatch nothing more."""
        outcomes = worker.receive()
        if outcomes is None:
            task = worker.task
            self.selector.unregister(worker.replies)
            code = worker.close()
            workers[workers.index(worker)] = self._start(worker.index)
            if task is None:
                return True
            why = f"worker {worker.index} exited with code {code} (see {worker.log_path})"
            return self.on_outcome(Outcome(task.cell.id, FAILED, why))
        go_on = True
        for outcome in outcomes:
            task, worker.task = worker.task, None
            if outcome.state == CLAIMED and self.executor.wait_claimed:
                self.claimed.add(task, outcome)
            else:
                go_on &= self.on_outcome(outcome)
        return go_on
