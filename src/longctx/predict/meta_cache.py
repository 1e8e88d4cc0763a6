"""Output metadata of meta kernels, cached: the same op on the same input layouts gives the same outputs.

Many meta kernels are Python (torch's reference implementations), about a hundred times slower than making
an empty tensor; a transformer runs the same ops on the same shapes in every layer. Like FakeTensor's
dispatch cache, a functional op (no in-place write, no output aliasing an input: declared, or found on its
first run, like ``_unsafe_view``) whose inputs are all meta tensors is keyed by its arguments' shapes,
strides, dtypes and scalar values; a hit makes fresh outputs of the recorded shapes, strides and dtypes
with ``torch.empty_strided`` instead of running the kernel.
"""

from __future__ import annotations

import functools

import torch

_CACHE: dict[tuple, object] = {}
_VIEWS: set = set()  # ops found returning an input's storage (``_unsafe_view`` declares no alias)
_MISSING = object()
_PLAIN_RETURNS = ("Tensor", "Tensor[]", "int", "float", "bool", "SymInt", "SymInt[]")


@functools.cache
def _declared_functional(func) -> bool:
    schema = func._schema
    if schema.is_mutable or any(r.alias_info is not None for r in schema.returns):
        return False
    return all(
        str(r.type) in ("Tensor", "Tensor[]", "int", "float", "bool", "SymInt", "SymInt[]") for r in schema.returns
    )


def cacheable(func) -> bool:
    """A functional op: nothing mutated, no output aliases an input, outputs are tensors or plain values."""
    return func not in _VIEWS and _declared_functional(func)


def _storages(value) -> set[int]:
    if isinstance(value, torch.Tensor):
        return {value.untyped_storage()._cdata}
    if isinstance(value, (list, tuple)):
        return set().union(*(_storages(v) for v in value)) if value else set()
    if isinstance(value, dict):
        return _storages(list(value.values()))
    return set()


def _key_of(value):
    if isinstance(value, torch.Tensor):
        return ("T", tuple(value.shape), value.stride(), value.dtype, value.storage_offset())
    if isinstance(value, (list, tuple)):
        return tuple(_key_of(v) for v in value)
    if value is None or isinstance(value, (bool, int, float, str, torch.dtype, torch.device, torch.layout,
                                           torch.memory_format)):  # fmt: skip
        return value
    raise TypeError  # an argument without a value key: do not cache


def key(func, args, kwargs) -> tuple | None:
    try:
        return (func, _key_of(args), tuple(sorted((k, _key_of(v)) for k, v in kwargs.items())))
    except TypeError:
        return None


def _describe(out):
    if isinstance(out, torch.Tensor):
        return ("T", tuple(out.shape), out.stride(), out.dtype)
    if isinstance(out, (list, tuple)):
        return (type(out), [_describe(v) for v in out])
    return ("V", out)


def _make(spec):
    if spec[0] == "T":
        return torch.empty_strided(spec[1], spec[2], dtype=spec[3], device="meta")
    if spec[0] == "V":
        return spec[1]
    kind, items = spec
    made = [_make(item) for item in items]
    return made if kind is list else tuple(made)


def run(func, args, kwargs):
    """``func(*args, **kwargs)`` on meta inputs, from the cache when the same call was seen before."""
    entry = key(func, args, kwargs)
    if entry is None:
        return func(*args, **kwargs)
    spec = _CACHE.get(entry, _MISSING)
    if spec is not _MISSING:
        return _make(spec)
    out = func(*args, **kwargs)
    if _storages(out) & _storages([args, kwargs]):
        _VIEWS.add(func)
    else:
        _CACHE[entry] = _describe(out)
    return out
