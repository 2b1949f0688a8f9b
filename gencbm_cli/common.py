"""What every command shares: output streams, error mapping, progress, common options.

stdout carries results only (paths, tables, or one JSON document); logs, warnings and progress
go to stderr. Errors from the engine become one line on stderr and the exit code DESIGN.md gives.
No torch import here: `gencbm --help` and completion must stay fast.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, TypeVar

import typer
from typer.exceptions import TyperException
from typing_extensions import Annotated

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_MISSING = 3
EXIT_CORRUPT = 4
EXIT_INTERRUPTED = 130


@dataclass
class Settings:
    quiet: bool = False  # no progress bars or info messages
    debug: bool = False  # tracebacks on errors


def _env_debug() -> bool:
    return os.environ.get("GENCBM_DEBUG", "") not in ("", "0")


settings = Settings(debug=_env_debug())


def reset_settings() -> None:
    """Back to the defaults at the start of each invocation (several may share a process)."""
    settings.quiet = False
    settings.debug = _env_debug()

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of text.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or info messages.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors (also GENCBM_DEBUG=1).")]


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def info(message: str) -> None:
    """A log line on stderr (silenced by --quiet)."""
    if not settings.quiet:
        stderr_console().print(message, markup=False)


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    sys.stdout.flush()


def apply_common(quiet: bool = False, debug: bool = False) -> None:
    """Apply the --quiet/--debug options a command received (the root's apply too)."""
    if quiet:
        settings.quiet = True
    if debug:
        settings.debug = True


def launched_rank() -> int:
    """This process's rank under torchrun (RANK with WORLD_SIZE > 1), else 0."""
    try:
        return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
    except ValueError:
        return 0


def fail(message: str, code: int) -> typer.Exit:
    rank = launched_rank()
    sys.stderr.write(f"gencbm: error: {f'[rank {rank}] ' if rank else ''}{message}\n")
    sys.stderr.flush()
    return typer.Exit(code)


F = TypeVar("F", bound=Callable[..., Any])


def command(func: F) -> F:
    """Map exceptions raised by a command to one stderr line and DESIGN.md's exit codes."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from engine.errors import GencbmError

        quiet_rank = launched_rank() != 0  # under torchrun only rank 0 prints results and progress
        saved_stdout = sys.stdout
        try:
            if quiet_rank:
                settings.quiet = True
                sys.stdout = open(os.devnull, "w")
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, TyperException):
            raise  # click's own usage errors and exits keep their codes
        except GencbmError as exc:
            if settings.debug:
                traceback.print_exc()
            raise fail(str(exc), exc.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", EXIT_INTERRUPTED) from None
        except FileNotFoundError as exc:
            if settings.debug:
                traceback.print_exc()
            raise fail(f"no such file: {exc.filename or exc}", EXIT_MISSING) from None
        except PermissionError as exc:
            if settings.debug:
                traceback.print_exc()
            raise fail(f"permission denied: {exc.filename or exc}", EXIT_ERROR) from None
        except Exception as exc:  # anything unexpected: one line, traceback on --debug
            if settings.debug:
                traceback.print_exc()
                raise fail(f"{type(exc).__name__}: {exc}", EXIT_ERROR) from None
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise fail(f"unexpected {type(exc).__name__}: {first} (run with --debug for the traceback)", EXIT_ERROR) from None
        finally:
            if quiet_rank:
                sys.stdout.close()
                sys.stdout = saved_stdout
            _leave_process_group()

    return wrapper  # type: ignore[return-value]


def _leave_process_group() -> None:
    """Tear down the torchrun process group a command joined (no-op otherwise)."""
    if "torch.distributed" not in sys.modules:
        return
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.destroy_process_group()
    import engine.distributed as D

    D._STATE = None


@contextlib.contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[..., None]]:
    """A rich progress bar on stderr with rate and ETA; yields update(done, total, status="").

    `status` is shown after the ETA (e.g. the latest losses of a training run).

    The bar appears on the first update (so nothing is drawn while a model loads or when the
    command fails before starting) and is silent with --quiet.
    """
    if settings.quiet:
        yield lambda done, tot, status="": None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(f"{task.speed:.2f}/s" if task.speed else "-/s")

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
        console=stderr_console(), transient=False,
    )
    state: dict[str, Any] = {}

    def update(done: int, tot: int, status: str = "") -> None:
        if "task" not in state:
            progress.start()
            state["task"] = progress.add_task(description, total=tot, status=status)
        progress.update(state["task"], completed=done, total=tot, status=status)

    try:
        yield update
    finally:
        if "task" in state:
            progress.stop()


# DDPM sampling options, shared by the commands that render images (ignored for StyleGAN2).
SchedulerOpt = Annotated[str, typer.Option("--scheduler", help="DDPM: diffusers scheduler, ddim or ddpm.")]
DdpmStepsOpt = Annotated[Optional[int], typer.Option("--steps", min=1, help="DDPM: denoising steps (default 50 for DDIM, 1000 for DDPM).")]
EtaOpt = Annotated[float, typer.Option("--eta", min=0.0, max=1.0, help="DDPM: DDIM eta (0: deterministic).")]
IntervenBelowOpt = Annotated[Optional[int], typer.Option("--intervene-below", min=0, help="DDPM: edit the latent at the steps with t <= this (default: the bottleneck's training --max-t, else 400).")]


def sampling(scheduler: str, steps: Optional[int], eta: float, intervene_below: Optional[int]):
    """engine.generators.ddpm.Sampling from the CLI options; a bad scheduler name is a usage error."""
    from engine.generators.ddpm import SCHEDULERS, Sampling

    if scheduler not in SCHEDULERS:
        raise typer.BadParameter(f"must be one of {', '.join(SCHEDULERS)} (got {scheduler!r})", param_hint="--scheduler")
    return Sampling(scheduler=scheduler, steps=steps, eta=eta, intervene_below=intervene_below)
