"""The `gencbm` command line: thin Typer commands over the `engine` library."""

__version__ = "0.1.0"
