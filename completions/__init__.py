"""Shell completion scripts shipped as package data (installed as gencbm_cli.completions)."""
