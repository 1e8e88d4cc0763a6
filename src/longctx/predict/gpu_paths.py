"""What a GPU run does differently from a CPU run of the same code, reproduced on meta tensors.

* ``F.scaled_dot_product_attention``: on meta it decomposes into the math path (a [T, T] score matrix); a
  GPU runs a fused kernel. The call is routed to the fused aten op a GPU would pick (flash attention without
  a mask in fp16/bf16, memory-efficient attention otherwise), whose meta kernels give the real output and
  log-sum-exp sizes.
* ``auto_batch_size`` (efficient IG and perturbation) sizes batches from the free GPU memory: it runs its
  GPU branch with the free memory of the simulated device (usable memory minus live bytes there).
* ``torch.tensor(data, device=meta)`` keeps the data's values (known values, ``simulate``), as a GPU copy would.
"""

from __future__ import annotations

import contextlib
import importlib
from unittest import mock

import torch

from longctx.predict.gpus import GpuSpec
from longctx.predict.simulate import Simulation, tensor_with_values

_sdpa = torch.nn.functional.scaled_dot_product_attention
BATCH_SIZING_MODULES = ("longctx.attribution.methods.ig", "longctx.attribution.methods.perturbation")


def fused_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """SDPA through the fused kernel a GPU would run (same arguments as ``F.scaled_dot_product_attention``)."""
    if not query.is_meta:
        return _sdpa(query, key, value, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa)
    if key.shape[-3] != query.shape[-3]:
        groups = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(groups, dim=-3), value.repeat_interleave(groups, dim=-3)
    if attn_mask is None and query.dtype in (torch.float16, torch.bfloat16):
        return torch.ops.aten._scaled_dot_product_flash_attention(query, key, value, dropout_p, is_causal, scale=scale)[
            0
        ]
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    return torch.ops.aten._scaled_dot_product_efficient_attention(
        query, key, value, attn_mask, grad, dropout_p, is_causal, scale=scale
    )[0]


def _gpu_batch_sizer(original, sim: Simulation, gpu: GpuSpec):
    def sized(model, seq_len: int, limit: int, *, grad: bool) -> int:
        device = model.get_input_embeddings().weight
        free = gpu.usable_bytes - sim.live_bytes().get(sim.device_of_tensor(device), 0)
        embeddings = importlib.import_module("longctx.attribution.embeddings")
        with (
            mock.patch.object(embeddings, "embedding_device", lambda _m: torch.device("cuda", 0)),
            mock.patch.object(torch.cuda, "mem_get_info", lambda *_a: (max(free, 0), gpu.memory_bytes)),
        ):
            return original(model, seq_len, limit, grad=grad)

    return sized


@contextlib.contextmanager
def gpu_code_paths(sim: Simulation, gpu: GpuSpec):
    """Inside, fused attention and GPU batch sizing apply to meta tensors (see the module docstring)."""
    from longctx.attribution.embeddings import auto_batch_size

    sizer = _gpu_batch_sizer(auto_batch_size, sim, gpu)
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(torch.nn.functional, "scaled_dot_product_attention", fused_sdpa))
        stack.enter_context(mock.patch.object(torch, "tensor", tensor_with_values))
        for name in BATCH_SIZING_MODULES:
            module = importlib.import_module(name)
            if hasattr(module, "auto_batch_size"):
                stack.enter_context(mock.patch.object(module, "auto_batch_size", sizer))
        yield
