"""`gencbm download`: fetch, import, verify and list the published artifacts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List, Optional

import typer
from typing_extensions import Annotated

from gencbm_cli.common import DebugOpt, JsonOpt, QuietOpt, apply_common, command, info, print_json, settings, stderr_console


def _size(n: Any) -> str:
    if not isinstance(n, (int, float)) or n is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return "?"


class _Bars:
    """Rich byte progress bars on stderr (size, rate, ETA), one per transfer label."""

    def __init__(self) -> None:
        self.progress = None
        self.tasks: dict[str, Any] = {}

    def __call__(self, label: str, done: int, total: int | None) -> None:
        if settings.quiet:
            return
        if self.progress is None:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                TextColumn("eta"), TimeRemainingColumn(), console=stderr_console(), transient=False,
            )
            self.progress.start()
        if label not in self.tasks:
            self.tasks[label] = self.progress.add_task(label, total=total)
        self.progress.update(self.tasks[label], completed=done, total=total)

    def log(self, message: str) -> None:
        if settings.quiet:
            return
        if self.progress is not None:
            self.progress.console.print(message, markup=False, highlight=False)
        else:
            info(message)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _report_errors(errors: list[tuple[str, Exception]]) -> None:
    """One stderr line per failed artifact, then the exit code (the highest of them)."""
    codes = []
    for _, exc in errors[:-1]:
        sys.stderr.write(f"gencbm: error: {exc}\n")
        codes.append(getattr(exc, "exit_code", 1))
    last = errors[-1][1]
    codes.append(getattr(last, "exit_code", 1))
    if len(errors) == 1:
        raise last
    sys.stderr.write(f"gencbm: error: {last}\n")
    sys.stderr.flush()
    raise typer.Exit(max(codes))


def _list(json_out: bool) -> None:
    from engine.store.artifacts import list_artifacts

    rows = list_artifacts()
    if json_out:
        print_json(rows)
        return
    widths = (max(len(r["name"]) for r in rows), max(len(r["kind"]) for r in rows))
    typer.echo(f"{'NAME':<{widths[0]}}  {'KIND':<{widths[1]}}  {'SIZE':>9}  {'CHECKSUM':<8}  {'STORED':<6}  DESCRIPTION")
    for r in rows:
        size = _size(r["size"] or r["stored_size"]) if (r["size"] or r["stored_size"]) else (f"~{_size(r['approx_size'])}" if r["approx_size"] else "?")
        typer.echo(
            f"{r['name']:<{widths[0]}}  {r['kind']:<{widths[1]}}  {size:>9}  {r['checksum']:<8}  {'yes' if r['stored'] else 'no':<6}  {r['description']}"
        )


def _verify(names: list[str], json_out: bool, bars: _Bars) -> None:
    from engine.store.artifacts import stored_names, verify

    targets = names or stored_names()
    results = []
    try:
        for name in targets:
            results.append(verify(name, progress=bars))
    finally:
        bars.close()
    if json_out:
        print_json(results)
    else:
        for r in results:
            typer.echo(f"{r['name']}\t{r['status']}" + (f"\t{r['detail']}" if r.get("detail") else ""))
        if not results:
            info("nothing is stored yet")
    if any(r["status"] == "corrupt" for r in results):
        bad = [r["name"] for r in results if r["status"] == "corrupt"]
        raise _fail_corrupt(bad)
    if names and any(r["status"] == "missing" for r in results):
        raise typer.Exit(3)


def _fail_corrupt(bad: list[str]) -> typer.Exit:
    sys.stderr.write(f"gencbm: error: corrupt: {', '.join(bad)}; fetch again with `gencbm download {' '.join(bad)} --force`\n")
    return typer.Exit(4)


@command
def download(
    names: Annotated[Optional[List[str]], typer.Argument(help="Artifact names (see --list).", show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every artifact of the registry (over 12 GB, 8.4 GB of it the ViT classifiers).")] = False,
    list_: Annotated[bool, typer.Option("--list", help="List the registry and what is stored.")] = False,
    mirror: Annotated[Optional[str], typer.Option("--mirror", metavar="URL", help="Fetch every file from URL/{file name} (a URL or a local folder; also GENCBM_MIRROR).")] = None,
    from_file: Annotated[Optional[Path], typer.Option("--from-file", metavar="PATH", help="Import a file (or folder) obtained another way: verify it and place it.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Fetch again even when a good copy is stored (repairs a corrupt one).")] = False,
    verify_: Annotated[bool, typer.Option("--verify", help="Re-hash what is stored (the names given, or everything).")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Fetch the published models, classifiers and splits into the store (GENCBM_HOME), verified.

    Prints the stored path of each artifact (or, with --json, their manifest entries).
    """
    apply_common(quiet, debug)
    from engine.errors import GencbmError, UsageError
    from engine.store.artifacts import FetchOptions
    from engine.store.artifacts import download as fetch
    from engine.store.registry import load_registry

    names = list(names or [])
    if sum([bool(list_), bool(verify_), bool(from_file is not None)]) > 1:
        raise UsageError("use one of --list, --verify and --from-file at a time")
    if list_:
        if names or all_:
            raise UsageError("--list takes no artifact names")
        _list(json_out)
        return
    bars = _Bars()
    if verify_:
        _verify([] if all_ else names, json_out, bars)
        return
    registry = load_registry()
    if all_:
        if names:
            raise UsageError("give artifact names or --all, not both")
        names = registry.names()
    if not names:
        raise UsageError("name at least one artifact, or use --all or --list (see `gencbm download --list`)")
    if from_file is not None and len(names) != 1:
        raise UsageError("--from-file imports one artifact: give exactly one NAME")
    arts = [registry.get(n) for n in names]  # unknown names fail before anything is fetched
    opts = FetchOptions(mirror=mirror, force=force, from_file=from_file, progress=bars, info=bars.log, hub_progress=not settings.quiet)
    results: list[dict] = []
    errors: list[tuple[str, Exception]] = []
    try:
        for art in arts:
            try:
                results.append(fetch(art.name, opts, registry))
            except GencbmError as exc:
                if len(arts) == 1:
                    raise
                errors.append((art.name, exc))
    finally:
        bars.close()
    if json_out:
        print_json(results)
    else:
        from engine.store.paths import home

        for r in results:
            typer.echo(str(home() / r["path"]))
    for r in results:
        what = {"present": "already stored", "downloaded": "downloaded", "imported": "imported"}[r["status"]]
        digest = f", sha256 {r['sha256'][:12]}" if r.get("sha256") else ""
        info(f"{r['name']}: {what} ({_size(r.get('size'))}{digest}, verified by {r.get('verified_by')})")
    if errors:
        _report_errors(errors)
