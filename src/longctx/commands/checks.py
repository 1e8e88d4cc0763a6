"""Input checks the commands run before any work (``longctx.validate`` does the checking): each bad input is one
line and exit 2, before a model is loaded or a file written."""

from __future__ import annotations

from pathlib import Path

from longctx.validate import validate_device, validate_model_dir


def check_model(spec: str | None, *, weights: bool = True) -> None:
    """A ``--model``-like argument: ``random:<arch>``, or a directory (local or in the offline cache) whose config
    is valid and, with ``weights``, whose weight files are present and not truncated or garbage."""
    from longctx.models import RANDOM_PREFIX, resolve_model_dir

    if not spec or spec.startswith(RANDOM_PREFIX):
        return
    path = Path(spec).expanduser()
    if not path.is_dir():
        path = resolve_model_dir(spec)[0]  # a hub id from the offline cache (or a UsageError saying why not)
    if weights:
        validate_model_dir(path)


def check_device(device: str | None) -> None:
    if device:
        validate_device(device)
