"""Locations in the store (`GENCBM_HOME`; default `$XDG_CACHE_HOME/gencbm` or `~/.cache/gencbm`)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """Root of the artifact store."""
    env = os.environ.get("GENCBM_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "gencbm"


def artifact_dir(name: str) -> Path:
    """Folder holding the files of the named artifact (what `gencbm download NAME` fills)."""
    return home() / "artifacts" / name


def converted_dir() -> Path:
    """Folder of safetensors conversions of imported network pickles."""
    return home() / "converted"


def find_artifact(name: str, suffixes: tuple[str, ...] = (".pkl", ".safetensors")) -> Path | None:
    """The main file of a downloaded artifact, or None when it is not in the store."""
    folder = artifact_dir(name)
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in suffixes and not p.name.startswith("."))
    return files[0] if files else None
