"""A model on meta tensors, placed on logical GPUs as a real run would place it.

The device map is computed on the meta model by the same functions a real load uses: transformers'
``_get_device_map`` (what ``from_pretrained(device_map="balanced")`` calls in this artifact's stack) or
accelerate's ``get_balanced_memory`` + ``infer_auto_device_map`` (what transformers 4.x called: the original
attribution experiment's placement; it reproduces that run's per-device weights, e.g. 1, 8, 8, 8, 8 and 3
decoder layers of Qwen3-8B on six GPUs). At run time the hooks do what accelerate's ``AlignDevicesHook``
does: inputs of a placed module are copied to its device when they live elsewhere, the top-level model
hands its outputs back on the device its inputs came from (``io_same_device``), and tensors a placed module
makes from nothing live on its device.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from accelerate.utils.operations import recursively_apply

from longctx.errors import UsageError
from longctx.predict.simulate import Simulation

DEVICE_MAP_RULES = ("transformers", "accelerate")


def cuda(index: int | str) -> str:
    return f"cuda:{index}" if isinstance(index, int) else str(index)


@functools.lru_cache(maxsize=4)
def _meta_model_cached(spec: str, dtype: str, attn_implementation: str | None):
    from transformers import AutoModelForCausalLM

    from longctx.models import model_config, parse_dtype

    config = model_config(spec)
    kernel = {"attn_implementation": attn_implementation} if attn_implementation else {}
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=parse_dtype(dtype), **kernel)


def meta_causal_lm(spec: str, dtype: str, attn_implementation: str | None, *, trainable: bool = False):
    """The model of ``spec`` (config only, weights on meta), eval mode; parameters frozen unless ``trainable``.

    Built once per (spec, dtype, kernel) and reused: gradients are cleared and hooks removed by ``Placement``.
    """
    model = _meta_model_cached(spec, dtype, attn_implementation).eval()
    for param in model.parameters():
        param.grad = None
    model.requires_grad_(trainable)
    return model


def device_map(model, n_gpus: int, usable_bytes: int, rule: str = "transformers") -> dict[str, str]:
    """Module name -> logical device for ``n_gpus`` GPUs of ``usable_bytes`` each ("balanced"), or all on cuda:0."""
    if n_gpus <= 1:
        return {"": cuda(0)}
    budget = {index: usable_bytes for index in range(n_gpus)}
    if rule == "transformers":
        from transformers.integrations.accelerate import _get_device_map

        placed = _get_device_map(model, "balanced", budget, None)
    elif rule == "accelerate":
        from accelerate.utils import get_balanced_memory, infer_auto_device_map

        split = model._no_split_modules
        balanced = get_balanced_memory(model, max_memory=budget, no_split_module_classes=split, dtype=model.dtype)
        placed = infer_auto_device_map(model, max_memory=balanced, no_split_module_classes=split, dtype=model.dtype)
    else:
        raise UsageError(f"unknown device-map rule {rule!r}; choose one of {', '.join(DEVICE_MAP_RULES)}")
    off_gpu = sorted(name for name, where in placed.items() if not isinstance(where, int))
    if off_gpu:
        raise UsageError(f"the model does not fit on {n_gpus} GPUs: {', '.join(off_gpu)} would be offloaded")
    return {name: cuda(where) for name, where in placed.items()}


@dataclass
class Placement:
    """Logical placement of a meta model inside a ``Simulation``; ``remove()`` detaches the hooks."""

    model: torch.nn.Module
    device_map: dict[str, str]
    handles: list = field(default_factory=list)

    @property
    def devices(self) -> list[str]:
        return sorted(set(self.device_map.values()))

    @property
    def main_device(self) -> str:
        """Where ``model.device`` points on a GPU run: the first parameter's device."""
        first = next(iter(self.model.named_parameters()))[0]
        return self.device_of_parameter(first)

    def layer_devices(self) -> list[str]:
        """The device of each decoder layer, in order."""
        layers = getattr(self.model.base_model, "layers", None) or []
        names = {id(module): name for name, module in self.model.named_modules()}
        return [self.device_of_parameter(names[id(layer)] + ".") for layer in layers]

    def device_of_parameter(self, name: str) -> str:
        best = max((key for key in self.device_map if key == "" or name == key or name.startswith(key + ".")), key=len)
        return self.device_map[best]

    def attach(self, sim: Simulation) -> Placement:
        sim.default_device = self.main_device
        for name, param in [*self.model.named_parameters(), *self.model.named_buffers()]:
            sim.pin([param], self.device_of_parameter(name))
        if len(self.devices) > 1:
            for name, device in self.device_map.items():
                module = self.model.get_submodule(name)
                self.handles += _align_hooks(sim, module, device, io_same_device=name == "")
            if "" not in self.device_map:
                self.handles += _io_same_device_hooks(sim, self.model)
        return self

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


class _LogicalCopy(torch.autograd.Function):
    """``tensor.to(device)`` between logical devices: a copy there, and the gradient copied back (as ``.to``)."""

    @staticmethod
    def forward(ctx, sim: Simulation, tensor: torch.Tensor, source: str, target: str):
        ctx.sim, ctx.source = sim, source
        with sim.forced_device(target):
            return tensor.clone()

    @staticmethod
    def backward(ctx, grad):
        with ctx.sim.forced_device(ctx.source):
            return None, grad.clone(), None, None


def _copy_to(sim: Simulation, data, device: str):
    """accelerate's ``send_to_device`` on logical devices: a copy for every tensor living elsewhere."""

    def move(tensor: torch.Tensor):
        source = sim.device_of_tensor(tensor)
        if not tensor.is_meta or source == device:
            return tensor
        return _LogicalCopy.apply(sim, tensor, source, device)

    return recursively_apply(move, data)


def _first_device(sim: Simulation, data) -> str | None:
    if isinstance(data, Mapping):
        data = list(data.values())
    if isinstance(data, (tuple, list)):
        for item in data:
            found = _first_device(sim, item)
            if found is not None:
                return found
        return None
    return sim.device_of_tensor(data) if isinstance(data, torch.Tensor) else None


def _align_hooks(sim: Simulation, module, device: str, io_same_device: bool) -> list:
    inputs_from: list[str | None] = []

    def before(_module, args, kwargs):
        if io_same_device:
            inputs_from.append(_first_device(sim, [args, kwargs]))
        sim.context.append(device)
        return _copy_to(sim, args, device), _copy_to(sim, kwargs, device)

    def after(_module, _args, output):
        sim.context.pop()
        if io_same_device:
            source = inputs_from.pop()
            if source is not None:
                return _copy_to(sim, output, source)
        return None

    return [
        module.register_forward_pre_hook(before, with_kwargs=True),
        module.register_forward_hook(after, always_call=True),
    ]


def _io_same_device_hooks(sim: Simulation, model) -> list:
    inputs_from: list[str | None] = []

    def before(_module, args, kwargs):
        inputs_from.append(_first_device(sim, [args, kwargs]))

    def after(_module, _args, output):
        source = inputs_from.pop()
        return _copy_to(sim, output, source) if source is not None else None

    return [
        model.register_forward_pre_hook(before, with_kwargs=True),
        model.register_forward_hook(after, always_call=True),
    ]
