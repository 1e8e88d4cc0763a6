"""`longctx attribution`: registered by its own issue's work."""


def register(sub) -> None:
    """Placeholder until the attribution subcommand lands (see the issue tracker)."""
