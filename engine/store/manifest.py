"""The store's manifest (what is stored, from where, with which sha256) and the hash cache.

`GENCBM_HOME/manifest.json`:
    {"format": 1,
     "artifacts": {NAME: {"name", "kind", "source", "origin", "path", "file", "size", "sha256",
                          "verified_by", "time", "files": [{"path", "size", "sha256"}, ...]}},
     "pins": {NAME: {FILE: SHA256}}}

`path` is the artifact's main path relative to the store root (its file, or its folder for
multi-file artifacts); `files` lists every stored file relative to the artifact folder.
`pins` keeps the sha256 recorded at the first download of artifacts without a published checksum
(trust on first use); pins survive `--force`, so a re-download must match what was first seen.

`GENCBM_HOME/hashes.json` caches sha256 by (path, size, mtime): a stored file is re-hashed only when
it changed, so verifying a large model on every load is a stat() call.

Both files are read-modify-written under a file lock and replaced atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from engine.store.atomic import atomic_write_bytes
from engine.store.paths import home

FORMAT = 1
CHUNK = 1 << 20


def manifest_path() -> Path:
    return home() / "manifest.json"


def hashes_path() -> Path:
    return home() / "hashes.json"


def locks_dir() -> Path:
    return home() / "locks"


@contextlib.contextmanager
def file_lock(path: Path, timeout: float = -1) -> Iterator[None]:
    """An inter-process lock on `path` (filelock); blocks until acquired (or `timeout` s)."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path), timeout=timeout):
        yield


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def sha256_file(path: str | Path, progress: Callable[[int, int], None] | None = None) -> str:
    """Hex sha256 of a file, reading it in 1 MiB chunks; `progress(done, total)` as it goes."""
    h = hashlib.sha256()
    total = os.path.getsize(path)
    done = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            h.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return h.hexdigest()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # an unreadable manifest reads as empty; the artifacts are then re-verified or re-fetched
    return doc if isinstance(doc, dict) else {}


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())


# ------------------------------------------------------------------------------------------------
# The manifest.


def read_manifest() -> dict[str, Any]:
    doc = _read_json(manifest_path())
    doc.setdefault("format", FORMAT)
    if not isinstance(doc.get("artifacts"), dict):
        doc["artifacts"] = {}
    if not isinstance(doc.get("pins"), dict):
        doc["pins"] = {}
    return doc


@contextlib.contextmanager
def edit_manifest() -> Iterator[dict[str, Any]]:
    """Read-modify-write the manifest under its lock; the change is written when the block ends."""
    with file_lock(locks_dir() / "manifest.lock"):
        doc = read_manifest()
        yield doc
        _write_json(manifest_path(), doc)


def get_entry(name: str) -> dict[str, Any] | None:
    entry = read_manifest()["artifacts"].get(name)
    return entry if isinstance(entry, dict) else None


def all_entries() -> dict[str, dict[str, Any]]:
    return {k: v for k, v in read_manifest()["artifacts"].items() if isinstance(v, dict)}


def put_entry(entry: dict[str, Any]) -> None:
    with edit_manifest() as doc:
        doc["artifacts"][entry["name"]] = entry


def remove_entry(name: str) -> None:
    with edit_manifest() as doc:
        doc["artifacts"].pop(name, None)


def get_pins(name: str) -> dict[str, str]:
    pins = read_manifest()["pins"].get(name)
    return dict(pins) if isinstance(pins, dict) else {}


def set_pins(name: str, pins: dict[str, str]) -> None:
    """Record first-seen sha256s; an existing pin is never replaced."""
    if not pins:
        return
    with edit_manifest() as doc:
        current = doc["pins"].setdefault(name, {})
        for file, digest in pins.items():
            current.setdefault(file, digest)


def entry_main_path(entry: dict[str, Any]) -> Path:
    return home() / entry["path"]


def entry_folder(entry: dict[str, Any]) -> Path:
    """The artifact's folder (the main path itself for multi-file artifacts)."""
    main = entry_main_path(entry)
    return main if entry.get("multi_file") else main.parent


# ------------------------------------------------------------------------------------------------
# The hash cache.


def _stat_key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def cached_sha256(path: str | Path, progress: Callable[[int, int], None] | None = None) -> str:
    """sha256 of a file, re-hashed only when its size or mtime differ from the cached ones.

    FileNotFoundError when it does not exist. The cache is best effort: a store on a read-only
    file system just hashes every time.
    """
    path = Path(path).resolve()
    key = _stat_key(path)
    if key is None:
        raise FileNotFoundError(2, "No such file", str(path))
    cached = _read_json(hashes_path()).get(str(path))
    if isinstance(cached, dict) and cached.get("size") == key[0] and cached.get("mtime_ns") == key[1] and cached.get("sha256"):
        return str(cached["sha256"])
    digest = sha256_file(path, progress)
    if _stat_key(path) == key:  # unchanged while hashing: worth remembering
        remember_sha256(path, digest, key)
    return digest


def remember_sha256(path: str | Path, digest: str, key: tuple[int, int] | None = None) -> None:
    """Put a known sha256 for a file into the cache (e.g. computed while downloading it)."""
    path = Path(path).resolve()
    key = key or _stat_key(path)
    if key is None:
        return
    with contextlib.suppress(OSError):
        with file_lock(locks_dir() / "hashes.lock"):
            doc = _read_json(hashes_path())
            doc = {k: v for k, v in doc.items() if Path(k).exists()} if len(doc) > 2000 else doc
            doc[str(path)] = {"size": key[0], "mtime_ns": key[1], "sha256": digest}
            _write_json(hashes_path(), doc)


def forget_sha256(path: str | Path) -> None:
    path = Path(path).resolve()
    with contextlib.suppress(OSError):
        with file_lock(locks_dir() / "hashes.lock"):
            doc = _read_json(hashes_path())
            if doc.pop(str(path), None) is not None:
                _write_json(hashes_path(), doc)
