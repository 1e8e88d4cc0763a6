"""longctx: reproducibility artifact for two long-context LLM efficiency studies."""

__version__ = "0.1.0"
