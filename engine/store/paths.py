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
    """The main file of a downloaded artifact, or None when it is not in the store.

    An artifact recorded in the manifest (what `gencbm download NAME` stored) is verified first:
    size and sha256, re-hashing only a file whose size or mtime changed. A copy that no longer
    verifies raises CorruptFileError (exit 4, naming `gencbm download NAME --force`) and is never
    returned; for a multi-file artifact the folder is returned. Files put into `artifacts/NAME/`
    by hand (no manifest entry) are found as before, unverified.
    """
    from engine.store.artifacts import stored_path  # late: artifacts imports this module

    found = stored_path(name)
    if found is not None:
        return found
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        return None
    folder = artifact_dir(name)
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in suffixes and not p.name.startswith("."))
    return files[0] if files else None
