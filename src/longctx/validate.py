"""Input checks that run before any work: each refuses a bad input with one line (UsageError) saying what and why.

Devices, model directories (config and weights, safetensors headers parsed without loading a tensor), text
files (UTF-8, non-empty), output files and results directories (writable, checked by creating and removing a
temporary file: permission bits say nothing when running as root).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

from longctx.errors import UsageError

DEVICE_RE = re.compile(r"auto|cpu|cuda(?::(?P<index>\d+))?")
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN_INDEX = "pytorch_model.bin.index.json"
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit on the JSON header
PICKLE_MAGIC = b"\x80"  # torch.save's legacy (non-zip) format starts with a pickle protocol byte


# ----------------------------------------------------------------------------------------------- device


def validate_device(device: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` with device N visible; anything else is refused."""
    match = DEVICE_RE.fullmatch(device)
    if match is None:
        raise UsageError(f"--device {device!r} is not a device: use auto, cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        import torch

        visible = torch.cuda.device_count()
        if visible == 0:
            raise UsageError(f"--device {device}: no CUDA device is visible (use --device cpu or auto)")
        index = match.group("index")
        if index is not None and int(index) >= visible:
            raise UsageError(f"--device {device}: only {visible} CUDA device(s) visible (cuda:0 to cuda:{visible - 1})")
    return device


# ----------------------------------------------------------------------------------------------- model directory


def validate_model_dir(path: str | os.PathLike) -> Path:
    """A Hugging Face model directory: config.json with a model_type, and weights that are not truncated or garbage."""
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"model directory {path} does not exist or is not a directory")
    config = _read_json(path / "config.json", "model config")
    if not isinstance(config, dict) or not config.get("model_type"):
        raise UsageError(f"model config {path / 'config.json'} has no model_type")
    weights = _weight_files(path)
    if not weights:
        raise UsageError(
            f"model directory {path} has no weights (*.safetensors, {SAFETENSORS_INDEX} or pytorch_model.bin)"
        )
    for file in weights:
        if file.suffix == ".safetensors":
            _check_safetensors(file)
        else:
            _check_torch_bin(file)
    return path


def _weight_files(path: Path) -> list[Path]:
    """The weight files a loader would read, preferring safetensors (as transformers does); shards from the index."""
    for index in (SAFETENSORS_INDEX, TORCH_BIN_INDEX):
        if (path / index).exists():
            weight_map = _read_json(path / index, "weights index")
            try:
                shards = sorted(set(weight_map["weight_map"].values()))
            except (KeyError, TypeError, AttributeError):
                raise UsageError(f"weights index {path / index} has no weight_map") from None
            missing = [s for s in shards if not (path / s).is_file()]
            if missing:
                raise UsageError(f"weights index {path / index} names {', '.join(missing[:3])}, which is missing")
            return [path / s for s in shards]
    safetensors = sorted(path.glob("*.safetensors"))
    if safetensors:
        return safetensors
    return [path / "pytorch_model.bin"] if (path / "pytorch_model.bin").is_file() else []


def _check_safetensors(file: Path) -> None:
    """Parse the 8-byte header length and the JSON header; the file must be as long as the header says."""
    size = file.stat().st_size
    with open(file, "rb") as fh:
        prefix = fh.read(8)
        header_len = int.from_bytes(prefix, "little") if len(prefix) == 8 else None
        if header_len is None or header_len > min(size - 8, MAX_SAFETENSORS_HEADER):
            raise UsageError(
                f"weights {file} are not a valid safetensors file: {size} bytes cannot hold the header it announces "
                "(truncated or garbage)"
            )
        try:
            header = json.loads(fh.read(header_len))
            ends = [int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"]
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            raise UsageError(f"weights {file} are not a valid safetensors file: its header is not valid JSON") from None
    needed = 8 + header_len + max(ends, default=0)
    if size < needed:
        raise UsageError(f"weights {file} are truncated: {size} bytes, its header describes {needed}")


def _check_torch_bin(file: Path) -> None:
    """torch.save files are zip archives (their directory sits at the end, so truncation shows) or legacy pickles."""
    if zipfile.is_zipfile(file):
        return
    with open(file, "rb") as fh:
        if fh.read(1) == PICKLE_MAGIC:
            return
    raise UsageError(
        f"weights {file} are not a torch checkpoint (neither a zip archive nor a pickle): truncated or garbage"
    )


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{what} {path} not found") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} {path} is not UTF-8 (byte offset {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{what} {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except OSError as exc:
        raise UsageError(f"{what} {path} cannot be read: {exc.strerror}") from None


# ----------------------------------------------------------------------------------------------- text files


def validate_text_file(path: str | os.PathLike, what: str = "text file", allow_empty: bool = False) -> str:
    """The file's text: readable, UTF-8 (else the byte offset of the first bad byte) and, unless allowed, not blank."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what} {path} is a directory")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{what} {path} not found") from None
    except OSError as exc:
        raise UsageError(f"{what} {path} cannot be read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{what} {path} is not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} ({exc.reason})"
        ) from None
    if not allow_empty and not text.strip():
        raise UsageError(f"{what} {path} is empty")
    return text


# ----------------------------------------------------------------------------------------------- outputs


def validate_output_file(
    path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), what: str = "--out"
) -> Path:
    """A file we may write: not a directory, its directory exists or can be created and is writable, no input."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what} {path} is a directory; give a file path")
    _check_creatable_under(path.parent, what, path)
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{what} {path} is not writable")
    for source in inputs:
        if _same_file(path, Path(source)):
            raise UsageError(f"{what} {path} is the input {source}: writing it would destroy the input")
    return path


def validate_results_dir(path: str | os.PathLike, what: str = "results directory") -> Path:
    """A directory we may write results into: an existing writable directory, or one that can be created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path} is a file, not a directory")
    _check_creatable_under(path, what, path)
    return path


def _check_creatable_under(directory: Path, what: str, target: Path) -> None:
    """``directory`` exists or can be created: its nearest existing ancestor is a directory we can write in."""
    ancestor = directory
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"{what} {target} is under {ancestor}, which is a file, not a directory")
    try:
        with tempfile.NamedTemporaryFile(prefix=".longctx-write-check-", dir=ancestor):
            pass
    except OSError as exc:
        raise UsageError(f"{what} {target}: cannot write in {ancestor} ({exc.strerror})") from None


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)  # hard links: two names, one file
    except OSError:
        return False
