"""The Typer app: `gencbm SUBCOMMAND`. Only working subcommands are registered."""

from __future__ import annotations

import typer
from typer._completion_classes import completion_init
from typing_extensions import Annotated

from gencbm_cli import __version__
from gencbm_cli.common import DebugOpt, QuietOpt, apply_common, reset_settings
from gencbm_cli.completion import completion
from gencbm_cli.doctor import doctor
from gencbm_cli.download import download
from gencbm_cli.generate import generate
from gencbm_cli.evaluate import evaluate_app
from gencbm_cli.intervene import intervene
from gencbm_cli.train_bottleneck import train_cbae, train_cc
from gencbm_cli.train_classifier import train_classifier

# Register typer's shell-completion handlers (complete_bash, complete_zsh, complete_fish), which
# add_completion=False would otherwise skip: `gencbm completion SHELL` replaces --install-completion.
completion_init()

app = typer.Typer(
    name="gencbm",
    help="Interpretable, steerable generators through post-hoc concept bottlenecks.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gencbm {__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """gencbm: make a frozen image generator explain itself and obey concept edits."""
    reset_settings()
    apply_common(quiet, debug)


app.command("generate")(generate)
app.command("doctor")(doctor)
app.command("completion")(completion)
app.command("download")(download)
app.command("train-classifier")(train_classifier)
app.command("train-cbae")(train_cbae)
app.command("train-cc")(train_cc)
app.command("intervene")(intervene)
app.add_typer(evaluate_app, name="evaluate")


def run() -> None:
    """Console-script entry point."""
    app(prog_name="gencbm")
