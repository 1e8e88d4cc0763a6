"""`longctx paper`: registered by its own issue's work."""


def register(sub) -> None:
    """Placeholder until the paper subcommand lands (see the issue tracker)."""
