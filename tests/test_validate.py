"""Input validation before any work: every bad input is refused with one line naming it and the reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from longctx import validate as V
from longctx.errors import UsageError


def refused(match: str, func, *args, **kwargs) -> str:
    """The one-line message of the UsageError ``func`` raises."""
    with pytest.raises(UsageError, match=match) as info:
        func(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------------------------- device


@pytest.mark.parametrize("device", ["banana", "CUDA", "cuda:", "cuda:-1", "cuda:0,1", "gpu", ""])
def test_device_that_is_not_a_device_is_refused(device):
    refused("is not a device: use auto, cpu, cuda or cuda:N", V.validate_device, device)


def test_cuda_devices_must_be_visible(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert V.validate_device("cpu") == "cpu" and V.validate_device("auto") == "auto"
    refused("no CUDA device is visible", V.validate_device, "cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert V.validate_device("cuda") == "cuda" and V.validate_device("cuda:1") == "cuda:1"
    refused(r"only 2 CUDA device\(s\) visible \(cuda:0 to cuda:1\)", V.validate_device, "cuda:2")


def test_loading_a_model_on_a_banana_is_refused_before_it_loads(tiny_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    from longctx.models import load_causal_lm

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the device was checked")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_loading)
    refused("--device 'banana' is not a device", load_causal_lm, str(tiny_dir / "tiny-qwen3"), device="banana")


# ----------------------------------------------------------------------------------------------- model directory


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A minimal model directory: a config with a model_type and one small safetensors file."""
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    save_file({"w": torch.arange(64, dtype=torch.float32), "b": torch.zeros(3)}, path / "model.safetensors")
    return path


def test_good_model_directory_passes(model_dir):
    assert V.validate_model_dir(model_dir) == model_dir


def test_tiny_models_pass(tiny_dir):
    for name in ("tiny-gpt-neox", "tiny-qwen3", "tiny-mlm"):
        V.validate_model_dir(tiny_dir / name)


def test_model_directory_without_weights(model_dir):
    (model_dir / "model.safetensors").unlink()
    refused("has no weights", V.validate_model_dir, model_dir)


def test_missing_model_directory_and_config(model_dir, tmp_path):
    refused("does not exist or is not a directory", V.validate_model_dir, tmp_path / "nope")
    (model_dir / "config.json").unlink()
    refused(r"config\.json not found", V.validate_model_dir, model_dir)


@pytest.mark.parametrize(
    ("config", "match"),
    [(b"{not json", "is not valid JSON: .* at line 1"), (b"[]", "has no model_type"), (b"{}", "has no model_type")],
)
def test_invalid_config(model_dir, config, match):
    (model_dir / "config.json").write_bytes(config)
    refused(match, V.validate_model_dir, model_dir)


@pytest.mark.parametrize("keep", [0, 5, 8, 40, -1])
def test_truncated_safetensors(model_dir, keep):
    weights = model_dir / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:keep] if keep >= 0 else data[:-1])
    message = refused(r"truncated", V.validate_model_dir, model_dir)
    if keep < 0:  # header intact, last tensor cut short
        assert f"{len(data) - 1} bytes, its header describes {len(data)}" in message


def test_garbage_safetensors(model_dir):
    weights = model_dir / "model.safetensors"
    weights.write_bytes(os.urandom(4096))
    refused("not a valid safetensors file", V.validate_model_dir, model_dir)
    weights.write_bytes((20).to_bytes(8, "little") + b"this is not json!!!!" + b"\0" * 100)
    refused("its header is not valid JSON", V.validate_model_dir, model_dir)


def test_sharded_safetensors_index(model_dir):
    (model_dir / "model.safetensors").rename(model_dir / "model-00001-of-00002.safetensors")
    shutil.copy(model_dir / "model-00001-of-00002.safetensors", model_dir / "model-00002-of-00002.safetensors")
    index = {"weight_map": {"w": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (model_dir / V.SAFETENSORS_INDEX).write_text(json.dumps(index))
    V.validate_model_dir(model_dir)
    (model_dir / "model-00002-of-00002.safetensors").unlink()
    refused("names model-00002-of-00002.safetensors, which is missing", V.validate_model_dir, model_dir)


def test_torch_bin_weights(model_dir):
    (model_dir / "model.safetensors").unlink()
    torch.save({"w": torch.ones(4)}, model_dir / "pytorch_model.bin")
    V.validate_model_dir(model_dir)
    data = (model_dir / "pytorch_model.bin").read_bytes()
    (model_dir / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    refused("not a torch checkpoint", V.validate_model_dir, model_dir)


# ----------------------------------------------------------------------------------------------- text files


def test_text_file_is_returned(tmp_path):
    path = tmp_path / "prompt.txt"
    path.write_text("héllo", encoding="utf-8")
    assert V.validate_text_file(path, "prompt") == "héllo"


def test_non_utf8_prompt_names_the_byte_offset(tmp_path):
    path = tmp_path / "prompt.txt"
    path.write_bytes("abc é ".encode() + b"\xff rest")
    refused(r"prompt .* is not UTF-8: byte 0xff at offset 7", V.validate_text_file, path, "prompt")


@pytest.mark.parametrize("content", [b"", b" \n\t\n"])
def test_empty_prompt(tmp_path, content):
    path = tmp_path / "prompt.txt"
    path.write_bytes(content)
    refused("prompt .* is empty", V.validate_text_file, path, "prompt")
    assert V.validate_text_file(path, "prompt", allow_empty=True) == content.decode()


def test_missing_or_directory_text_file(tmp_path):
    refused("RULER file .* not found", V.validate_text_file, tmp_path / "nope.jsonl", "RULER file")
    refused("is a directory", V.validate_text_file, tmp_path, "RULER file")


# ----------------------------------------------------------------------------------------------- outputs


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory nobody may create files in, root included: chattr +i (root) or mode 0555 (other users)."""
    path = tmp_path / "ro"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    made = chattr and subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode == 0
    if not made:
        pytest.skip("running as root and `chattr +i` is unavailable here: no way to make a read-only directory")
    try:
        yield path
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


def test_output_file_that_is_fine_writes_nothing(tmp_path):
    out = tmp_path / "new" / "deeper" / "out.json"
    assert V.validate_output_file(out, inputs=[tmp_path / "in.txt"]) == out
    assert list(tmp_path.iterdir()) == []  # nothing created, no probe file left


def test_output_that_is_a_directory(tmp_path):
    refused("--out .* is a directory; give a file path", V.validate_output_file, tmp_path)


def test_output_under_a_file(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    refused(r"is under .*file\.txt, which is a file", V.validate_output_file, tmp_path / "file.txt" / "a" / "out.json")


def test_output_in_a_read_only_directory(read_only_dir):
    refused("cannot write in", V.validate_output_file, read_only_dir / "out.json")
    refused("cannot write in", V.validate_output_file, read_only_dir / "sub" / "out.json")


def test_output_equal_to_an_input(tmp_path, monkeypatch):
    source = tmp_path / "prompt.txt"
    source.write_text("x")
    refused("is the input", V.validate_output_file, source, inputs=[source])
    monkeypatch.chdir(tmp_path)
    refused("is the input", V.validate_output_file, "./sub/../prompt.txt", inputs=[source])
    (tmp_path / "link.txt").symlink_to(source)
    refused("is the input", V.validate_output_file, tmp_path / "link.txt", inputs=[source])
    os.link(source, tmp_path / "hard.txt")
    refused("is the input", V.validate_output_file, tmp_path / "hard.txt", inputs=[source])


def test_results_dir(tmp_path, read_only_dir):
    assert V.validate_results_dir(tmp_path / "results" / "smoke") == tmp_path / "results" / "smoke"
    assert not (tmp_path / "results").exists()
    (tmp_path / "results.json").write_text("{}")
    refused("is a file, not a directory", V.validate_results_dir, tmp_path / "results.json")
    refused("which is a file", V.validate_results_dir, tmp_path / "results.json" / "smoke")
    refused("cannot write in", V.validate_results_dir, read_only_dir / "results")
