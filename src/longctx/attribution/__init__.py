"""Token-level attribution of generated outputs (study 2): core API, methods, and the time curve."""

from longctx.attribution.base import (
    METHOD_NAMES,
    METHODS,
    AttributionConfig,
    AttributionInputs,
    AttributionResult,
    build_inputs,
    build_length_controlled_inputs,
    get_method,
    register_method,
)

__all__ = [
    "METHOD_NAMES",
    "METHODS",
    "AttributionConfig",
    "AttributionInputs",
    "AttributionResult",
    "build_inputs",
    "build_length_controlled_inputs",
    "get_method",
    "register_method",
]
