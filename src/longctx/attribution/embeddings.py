"""Embedding-space helpers shared by the gradient and perturbation methods: device, embeddings, batch size."""

from __future__ import annotations

import torch

CPU_BATCH_LIMIT = 8  # bounded default on CPU: memory there is not the constraint, cache locality is
GPU_MEMORY_FRACTION = 0.6  # share of the free GPU memory one batch may plan to use


def embedding_device(model) -> torch.device:
    return model.get_input_embeddings().weight.device


def auto_batch_size(model, seq_len: int, limit: int, *, grad: bool) -> int:
    """Sequences of length ``seq_len`` per forward (at most ``limit``): a bounded default on CPU, and on GPU
    what fits in a fixed share of the free memory by a conservative per-sequence activation estimate."""
    device = embedding_device(model)
    if device.type != "cuda":
        return max(1, min(limit, CPU_BATCH_LIMIT))
    cfg = model.config
    elem = torch.finfo(model.dtype).bits // 8
    per_layer = 16 * cfg.hidden_size + 4 * cfg.intermediate_size + cfg.num_attention_heads * seq_len
    layers = cfg.num_hidden_layers if grad else 2  # without grad only a layer's transients are alive
    per_sequence = elem * seq_len * per_layer * layers + 8 * cfg.vocab_size
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(limit, int(GPU_MEMORY_FRACTION * free) // per_sequence))


def input_embeddings(model, input_ids: torch.Tensor) -> torch.Tensor:
    """The input embeddings [T, d] of one sequence (no grad)."""
    with torch.no_grad():
        return model.get_input_embeddings()(input_ids[0].to(embedding_device(model)))
