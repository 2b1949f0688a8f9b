"""`gencbm doctor`: report the environment and the state of the CUDA ops."""

from __future__ import annotations

import typer
from typing_extensions import Annotated

from gencbm_cli.common import DebugOpt, JsonOpt, QuietOpt, apply_common, command, info, print_json


def _op_line(name: str, status: dict) -> str:
    state = status.get("state", "unknown")
    reason = status.get("error") or (status.get("reason") if state != "built" else None)
    return f"  {name:<10} {state}" + (f" ({reason})" if reason else "")


@command
def doctor(
    build_ops: Annotated[bool, typer.Option("--build-ops", help="Build the CUDA ops now (compile-and-link check without a GPU).")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Show python, torch, CUDA, GPU, nvcc, ninja and compiler versions and the CUDA ops' state."""
    apply_common(quiet, debug)
    from engine.doctor import collect

    if build_ops:
        info("building CUDA ops (this can take a few minutes the first time)...")
    report = collect(build_ops=build_ops)
    if json_out:
        print_json(report)
    else:
        gpus = ", ".join(f"{g['name']} (sm_{g['capability'].replace('.', '')}, {g['memory_gib']} GiB)" for g in report["gpus"]) or "none"
        rows = [
            ("python", report["python"]),
            ("platform", report["platform"]),
            ("torch", f"{report['torch']} (CUDA {report['torch_cuda'] or 'none'})"),
            ("diffusers", report.get("diffusers") or "not installed (DDPM generators need it)"),
            ("open_clip", report.get("open_clip") or "not installed (clipzs/tipzs need it)"),
            ("GPUs", gpus),
            ("nvcc", report["nvcc"] or "not found"),
            ("ninja", report["ninja"] or "not found"),
            ("compiler", report["compiler"] or "not found"),
            ("kernel cache", report["kernel_cache"]),
        ]
        for key, value in rows:
            typer.echo(f"{key:<13} {value}")
        typer.echo("ops:")
        for name, status in report["ops"].items():
            typer.echo(_op_line(name, status))
    failed = [n for n, s in report["ops"].items() if build_ops and not s.get("ok")]
    if failed:
        raise typer.Exit(1)
