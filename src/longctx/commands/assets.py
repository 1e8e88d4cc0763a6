"""`longctx assets`: registered by its own issue's work."""


def register(sub) -> None:
    """Placeholder until the assets subcommand lands (see the issue tracker)."""
