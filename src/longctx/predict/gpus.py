"""The GPUs a prediction can target: peak dense fp16/bf16 tensor FLOP/s, HBM bandwidth and memory, with sources.

Figures are the vendor's published ones (dense, i.e. without 2:4 sparsity). ``memory_bytes`` is the capacity
the driver reports (``nvidia-smi`` total), ``usable_bytes`` what a process can allocate after the CUDA
context (a fixed reserve): a cell "fits" when every device's predicted peak of live tensors stays below it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from longctx.errors import UsageError

MIB = 1 << 20
GIB = 1 << 30
CUDA_CONTEXT_RESERVE = GIB // 2  # CUDA context, cuBLAS workspace and allocator slack a process cannot use


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model as the roofline sees it."""

    name: str
    memory_bytes: int
    fp16_flops: float  # peak dense FP16/BF16 tensor-core FLOP/s
    hbm_bytes_per_s: float
    source: str

    @property
    def usable_bytes(self) -> int:
        return self.memory_bytes - CUDA_CONTEXT_RESERVE

    def as_dict(self) -> dict:
        return {**asdict(self), "usable_bytes": self.usable_bytes}


NVIDIA_DATASHEET_H100 = "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet"
GPUS = {
    spec.name: spec
    for spec in (
        GpuSpec(
            "H100-SXM-80GB",
            81559 * MIB,
            989.4e12,
            3.35e12,
            f"NVIDIA H100 Tensor Core GPU datasheet ({NVIDIA_DATASHEET_H100}): SXM5, FP16/BF16 1,979 TFLOPS with "
            "sparsity = 989.4 dense, 3.35 TB/s HBM3, 80 GB",
        ),
        GpuSpec(
            "H100-PCIe-80GB",
            81559 * MIB,
            756.5e12,
            2.0e12,
            f"NVIDIA H100 Tensor Core GPU datasheet ({NVIDIA_DATASHEET_H100}): PCIe, FP16/BF16 1,513 TFLOPS with "
            "sparsity = 756.5 dense, 2 TB/s HBM2e, 80 GB",
        ),
        GpuSpec(
            "H200",
            143771 * MIB,
            989.4e12,
            4.8e12,
            "NVIDIA H200 product page (https://www.nvidia.com/en-us/data-center/h200/): SXM, FP16/BF16 1,979 TFLOPS "
            "with sparsity = 989.4 dense, 4.8 TB/s HBM3e, 141 GB",
        ),
        GpuSpec(
            "A100-80GB",
            81920 * MIB,
            312e12,
            2.039e12,
            "NVIDIA A100 datasheet (https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
            "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf): SXM 80GB, FP16/BF16 tensor 312 TFLOPS dense, "
            "2,039 GB/s HBM2e",
        ),
        GpuSpec(
            "A800-80GB",
            81920 * MIB,
            312e12,
            2.0e12,
            "NVIDIA A800 datasheet (https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a800/pdf/"
            "a800-80gb-datasheet.pdf): 80GB, FP16/BF16 tensor 312 TFLOPS dense, about 2.0 TB/s HBM2e (SXM 2,039 "
            "GB/s, PCIe 1,935 GB/s); the original streaming study's GPU",
        ),
    )
}
ALIASES = {"H100-80GB": "H100-SXM-80GB", "H100": "H100-SXM-80GB", "A100": "A100-80GB", "A800": "A800-80GB"}


def gpu_spec(name: str) -> GpuSpec:
    """The spec called ``name`` (case-insensitive, aliases allowed); one-line UsageError for anything else."""
    by_lower = {key.lower(): key for key in [*GPUS, *ALIASES]}
    key = by_lower.get(name.strip().lower())
    if key is None:
        raise UsageError(f"unknown GPU {name!r}; choose one of {', '.join([*GPUS, *ALIASES])}")
    return GPUS[ALIASES.get(key, key)]


def gpu_from_device_name(device_name: str) -> GpuSpec | None:
    """The spec of a visible GPU from ``torch.cuda.get_device_name`` (None when not in the table)."""
    text = device_name.upper()
    for model in ("H200", "H100", "A800", "A100"):
        if model in text:
            if model == "H100":
                return GPUS["H100-PCIe-80GB" if "PCIE" in text else "H100-SXM-80GB"]
            return gpu_spec(model)
    return None
