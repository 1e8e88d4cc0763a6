"""The method registry: one ``MethodSpec`` per attribution method (name, paper label, family, options, code).

A method is a function ``(model, tokenizer, AttributionInputs, options) -> AttributionResult``; its options are
a small frozen dataclass of ``longctx.options.option`` fields, which give the CLI flags, the cell config and
the result's ``config.options``. Names are the original experiment's (``ifr_multi_hop`` is FlashTrace,
``ifr_multi_hop_both`` FlashTrace with stop-word handling); labels are what the paper prints.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from longctx.errors import UsageError
from longctx.options import check_fields


@dataclass
class SpanScores:
    """A span method's result: one score vector over the whole sequence, shared by the output rows it explains.

    ``scores`` [T] (absolute positions), ``rows`` [G] bool (output rows that carry ``scores``; the others
    are NaN), ``hops`` the raw per-hop vectors [T] it was combined from. Linear in T: never expanded to
    a [G, T] matrix unless a reader asks for one (``AttributionResult.as_matrix``).
    """

    scores: torch.Tensor
    rows: torch.Tensor
    hops: list[torch.Tensor] = field(default_factory=list)


@dataclass
class AttributionResult:
    """Token-level scores: ``matrix`` [G, n_user + G] float32 on CPU (NaN where a method leaves none), or, for
    span methods, ``span`` (one vector over the sequence; ``as_matrix`` expands it for display)."""

    matrix: torch.Tensor | None = None
    details: dict = field(default_factory=dict)
    span: SpanScores | None = None

    def as_matrix(self, inputs) -> torch.Tensor:
        """The [G, n_user + G] matrix (columns: user-prompt tokens, then output tokens), expanding a span result."""
        if self.matrix is not None:
            return self.matrix
        row = self.span.scores.detach().to("cpu", torch.float32)[inputs.column_positions()]
        matrix = row.expand(len(self.span.rows), -1).clone()
        matrix[~self.span.rows.cpu()] = float("nan")
        return matrix


@dataclass(frozen=True)
class NoOptions:
    """A method without settings of its own."""

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class MethodSpec:
    """Everything the artifact knows about one method."""

    name: str  # the original experiment's name: cell ids, --attr-funcs, ATTR_FUNCS
    label: str  # what tables, figures and macros print
    family: str  # gradient | relevance | perturbation | routing
    options: type  # frozen dataclass of the method's settings
    run: Callable[..., AttributionResult]  # the efficient protocol: this artifact's implementation
    reference: Callable[..., AttributionResult] | None = None  # the original experiment's code path
    # (model, options) -> None, run once before the reference runs are timed: what the original does outside
    # its timed call (spaCy's pipeline is built at import, the masked LM in the attributor's constructor)
    reference_setup: Callable[..., None] | None = None

    def runner(self, protocol: str) -> Callable[..., AttributionResult]:
        """The implementation of ``protocol`` (``reference`` | ``efficient``)."""
        if protocol == "efficient":
            return self.run
        if self.reference is None:
            raise UsageError(f"{self.name} has no reference implementation yet")
        return self.reference

    def make_options(self, values=None):
        """The method's options from a dict (plan data, JSON) or an options instance; None: the defaults."""
        if values is None:
            return self.options()
        if isinstance(values, self.options):
            return values
        if dataclasses.is_dataclass(values):
            values = dataclasses.asdict(values)
        known = {f.name for f in dataclasses.fields(self.options)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"{self.name} has no option {', '.join(unknown)}; it takes {', '.join(sorted(known))}")
        return self.options(**values)


_REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"attribution method {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def methods() -> dict[str, MethodSpec]:
    """Every registered method, in the paper's order (importing the method modules registers them)."""
    importlib.import_module("longctx.attribution.methods")
    return _REGISTRY


def method_names() -> tuple[str, ...]:
    return tuple(methods())


def method_spec(name: str) -> MethodSpec:
    """The spec called ``name``; a UsageError naming the choices for anything else."""
    specs = methods()
    if name not in specs:
        raise UsageError(f"unknown attribution method {name!r}; choose from {', '.join(specs)}")
    return specs[name]


def option_classes() -> list[type]:
    """The options dataclasses of every method (one CLI flag per distinct field)."""
    return list(dict.fromkeys(spec.options for spec in methods().values()))
