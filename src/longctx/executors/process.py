"""Child processes that die with their parent: each runs in its own process group and gets SIGKILL when the
process that started it dies, even by SIGKILL (Linux ``prctl(PR_SET_PDEATHSIG)``), so no worker is orphaned.

Workers keep nothing on disk that their parent would have to clean up: jobs and rows travel through pipes.
The death signal follows the *thread* that started the child, so start workers from the thread that waits for them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence

PR_SET_PDEATHSIG = 1
STOP_GRACE_S = 5.0


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` that asks the kernel to send ``sig`` to the child when its parent dies."""
    parent = os.getpid()

    def preexec() -> None:
        with contextlib.suppress(OSError, AttributeError):  # not Linux: the parent's own cleanup is all there is
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def spawn(argv: Sequence[str], **popen_kwargs) -> subprocess.Popen:
    """Start ``argv`` in a new process group, set to die with this process (``Popen`` keyword arguments pass on)."""
    return subprocess.Popen(list(argv), preexec_fn=die_with_parent(), start_new_session=True, **popen_kwargs)


def python_module(module: str, *args: str) -> list[str]:
    """The command line that runs ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def stop(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> int | None:
    """End ``proc`` and its process group: SIGTERM, then SIGKILL after ``grace_s``; its exit code (None: unknown)."""
    if proc.poll() is not None:
        return proc.returncode
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            return proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
    return proc.poll()
