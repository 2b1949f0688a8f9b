"""`python -m gencbm_cli`: the same as the `gencbm` console script."""

from gencbm_cli.main import run

if __name__ == "__main__":
    run()
