"""`longctx streaming`: registered by its own issue's work."""


def register(sub) -> None:
    """Placeholder until the streaming subcommand lands (see the issue tracker)."""
