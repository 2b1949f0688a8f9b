"""`gencbm doctor`: what this machine offers gencbm (versions, GPU, toolchain, kernel cache)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from typing import Any

OPS = ("bias_act", "upfirdn2d")


def _first_line(cmd: list[str]) -> str | None:
    exe = shutil.which(cmd[0])
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [l.strip() for l in (out.stdout or out.stderr).splitlines() if l.strip()]
    return lines[-1] if cmd[0] == "nvcc" and lines else (lines[0] if lines else None)


def _package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def collect(build_ops: bool = False) -> dict[str, Any]:
    """A JSON-ready report; with build_ops, builds the CUDA ops now (compile-and-link only without a GPU)."""
    import torch

    from engine.ops import builder

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": p.name, "capability": f"{p.major}.{p.minor}", "memory_gib": round(p.total_memory / 2**30, 1)})
    cxx = os.environ.get("CXX", "c++")
    report: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "diffusers": _package_version("diffusers"),
        "open_clip": _package_version("open_clip_torch"),
        "torch_distributed": torch.distributed.is_available(),
        "cuda_available": torch.cuda.is_available(),
        "gpus": gpus,
        "nvcc": _first_line(["nvcc", "--version"]),
        "nvcc_path": shutil.which("nvcc"),
        "ninja": _first_line(["ninja", "--version"]),
        "compiler": _first_line([cxx, "--version"]),
        "kernel_cache": str(builder.cache_root()),
        "ops": {},
    }
    from engine.errors import OpBuildError

    compile_only = not torch.cuda.is_available()
    for op in OPS:
        if not build_ops:
            status = builder.op_status(op)
            status["state"] = "built" if status.get("built") else ("buildable" if status.get("buildable") else "unavailable")
            report["ops"][op] = status
            continue
        try:
            result = builder.build_op(op, compile_only=compile_only)
            result.update(ok=True, state="compiled and linked (no GPU to load it on)" if compile_only else "built")
        except OpBuildError as exc:
            result = {"ok": False, "state": "build failed", "error": str(exc)}
        report["ops"][op] = result
    return report
