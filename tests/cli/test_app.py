"""The app's conventions: help without torch, registered commands, completion scripts, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gencbm_cli.completion import render_script, shipped_script
from gencbm_cli.main import app

REPO = Path(__file__).resolve().parents[2]
SHELLS = ("bash", "zsh", "fish")


def _run(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    code = "import sys; from gencbm_cli.main import run; sys.argv = ['gencbm', *sys.argv[1:]]; run()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120)


def test_help_lists_only_working_commands():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("generate", "doctor", "completion", "download", "train-classifier", "train-cbae", "train-cc", "intervene", "evaluate"):
        assert name in result.stdout


@pytest.mark.parametrize("args", [["--help"], ["generate", "--help"], ["doctor", "--help"], ["completion", "--help"], ["download", "--help"],
                                  ["train-cbae", "--help"], ["train-cc", "--help"], ["intervene", "--help"],
                                  ["evaluate", "--help"], ["evaluate", "steerability", "--help"]])
def test_help_does_not_import_torch(args):
    code = (
        "import sys\n"
        "from gencbm_cli.main import app\n"
        "from typer.testing import CliRunner\n"
        f"r = CliRunner().invoke(app, {args!r})\n"
        "assert r.exit_code == 0, r.output\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("shell", SHELLS)
def test_shipped_completion_scripts_match_the_app(shell):
    shipped = (REPO / "completions" / f"gencbm.{shell}").read_text()
    assert shipped == render_script(shell), f"completions/gencbm.{shell} drifted: regenerate it with render_script"
    assert shipped_script(shell) == shipped  # what the installed package data holds


@pytest.mark.parametrize("shell", SHELLS)
def test_completion_command_prints_the_script(shell):
    result = CliRunner().invoke(app, ["completion", shell])
    assert result.exit_code == 0
    assert result.stdout == render_script(shell)
    assert "_GENCBM_COMPLETE" in result.stdout


def test_completion_rejects_unknown_shell():
    result = CliRunner().invoke(app, ["completion", "tcsh"])
    assert result.exit_code == 2


def test_bash_completion_runtime_completes_subcommands_without_torch():
    env = {"_GENCBM_COMPLETE": "complete_bash", "COMP_WORDS": "gencbm ge", "COMP_CWORD": "1"}
    code = "import sys; from gencbm_cli.main import run; sys.argv=['gencbm']\ntry:\n    run()\nfinally:\n    print('TORCH', 'torch' in sys.modules, file=sys.stderr)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
    assert "generate" in out.stdout.split()
    assert "TORCH False" in out.stderr


def test_bash_completion_completes_options():
    env = {"_GENCBM_COMPLETE": "complete_bash", "COMP_WORDS": "gencbm generate --tr", "COMP_CWORD": "2"}
    out = _run([], env)
    words = out.stdout.split()
    assert "--trunc" in words and "--trunc-cutoff" in words


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("gencbm ")


def test_no_command_shows_help_and_usage_exit_code():
    result = CliRunner().invoke(app, [])
    assert result.exit_code in (0, 2)  # click shows help for a bare group
    assert "generate" in result.output


def test_unknown_command_is_usage_error():
    result = CliRunner().invoke(app, ["frobnicate"])
    assert result.exit_code == 2


def test_engine_does_not_import_cli_libraries():
    for path in (REPO / "engine").rglob("*.py"):
        text = path.read_text()
        for lib in ("typer", "rich"):
            assert f"import {lib}" not in text and f"from {lib}" not in text, f"{path} imports {lib}"
