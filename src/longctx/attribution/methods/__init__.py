"""The attribution methods, one module per family; importing this package registers them in the paper's order."""

# isort: off
from longctx.attribution.methods import ig, attention_ig, attnlrp, perturbation, reagent, ifr, flashtrace  # noqa: F401
# isort: on
