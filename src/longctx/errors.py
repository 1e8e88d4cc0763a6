"""The two failure kinds every command distinguishes (spec: exit 2 for bad usage/input, 1 for a failed run)."""


class UsageError(Exception):
    """Bad usage or bad input: the CLI prints one line naming the problem and exits 2, writing nothing."""


class RunFailure(Exception):
    """The inputs were fine but the run failed: the CLI prints one line and exits 1."""
