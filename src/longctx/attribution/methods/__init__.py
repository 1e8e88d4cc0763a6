"""Attribution method modules; importing this package registers every method (one module per family)."""

from longctx.attribution.methods import (  # noqa: F401
    attention_ig,
    attnlrp,
    flashtrace,
    ifr,
    ig,
    perturbation,
    reagent,
)
