"""`gencbm completion SHELL`: print the shell completion script shipped in completions/."""

from __future__ import annotations

import sys
from enum import Enum

import typer
from typing_extensions import Annotated

from gencbm_cli.common import command

PROG = "gencbm"
COMPLETE_VAR = "_GENCBM_COMPLETE"


class Shell(str, Enum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def render_script(shell: str) -> str:
    """The completion script for `shell`, generated from the app (what completions/ must hold)."""
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell) + "\n"


def shipped_script(shell: str) -> str:
    """The script shipped as package data (completions/gencbm.SHELL)."""
    from importlib import resources

    return resources.files("gencbm_cli.completions").joinpath(f"gencbm.{shell}").read_text(encoding="utf-8")


@command
def completion(
    shell: Annotated[Shell, typer.Argument(help="Shell to print the completion script for.")],
) -> None:
    """Print the completion script for bash, zsh or fish.

    bash: gencbm completion bash > ~/.local/share/bash-completion/completions/gencbm
    zsh:  gencbm completion zsh > "${fpath[1]}/_gencbm"
    fish: gencbm completion fish > ~/.config/fish/completions/gencbm.fish
    """
    sys.stdout.write(shipped_script(shell.value))
