"""`longctx run`: registered by its own issue's work."""


def register(sub) -> None:
    """Placeholder until the run subcommand lands (see the issue tracker)."""
