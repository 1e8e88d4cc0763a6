"""CLI subcommands: each module registers one parser and stays a thin layer over the library."""
