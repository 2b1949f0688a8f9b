"""Unpacking zip archives safely.

Every member is checked before anything is written: no absolute paths or drive letters, no `..`
components, no symbolic links (or any member that is not a plain file or folder), no two members
with the same path. A bad member makes the whole archive unsafe (CorruptFileError, exit code 4)
and nothing is extracted. Files are written by us (never by `ZipFile.extractall`) and their sizes
are checked against the archive's directory as they are written.
"""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable

from engine.errors import CorruptFileError

CHUNK = 1 << 20


def _member_path(info: zipfile.ZipInfo, archive: Path) -> PurePosixPath | None:
    """The safe relative path of a member (None for folders); CorruptFileError when unsafe."""
    raw = info.filename
    name = raw.replace("\\", "/")
    fmt = stat.S_IFMT((info.external_attr >> 16) & 0xFFFF)  # 0 when the archiver stored no Unix type
    if fmt == stat.S_IFLNK:
        raise CorruptFileError(f"{archive}: unsafe archive: member {raw!r} is a symbolic link")
    if fmt and fmt not in (stat.S_IFREG, stat.S_IFDIR):
        raise CorruptFileError(f"{archive}: unsafe archive: member {raw!r} is not a plain file or folder")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or "\x00" in name:
        raise CorruptFileError(f"{archive}: unsafe archive: member {raw!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise CorruptFileError(f"{archive}: unsafe archive: member {raw!r} escapes the target folder ('..')")
    if not parts:
        return None
    if info.is_dir():
        return None
    return PurePosixPath(*parts)


def list_members(archive: str | Path) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Every file member with its safe relative path; CorruptFileError for an unsafe or bad archive."""
    archive = Path(archive)
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
    except zipfile.BadZipFile as exc:
        raise CorruptFileError(f"{archive}: not a readable zip archive ({exc})") from None
    seen: set[str] = set()
    out = []
    for info in infos:
        rel = _member_path(info, archive)
        if rel is None:
            continue
        key = str(rel).lower()
        if key in seen:
            raise CorruptFileError(f"{archive}: unsafe archive: member {info.filename!r} appears twice")
        seen.add(key)
        out.append((info, rel))
    return out


def safe_extract(
    archive: str | Path,  # the zip file
    target: str | Path,  # an empty (or new) folder to unpack into
    progress: Callable[[int, int], None] | None = None,  # (bytes written, total uncompressed bytes)
) -> list[dict]:
    """Unpack `archive` into `target`; returns [{"path", "size", "sha256"}] for every file written."""
    archive, target = Path(archive), Path(target)
    members = list_members(archive)
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    total = sum(info.file_size for info, _ in members)
    done = 0
    written = []
    try:
        with zipfile.ZipFile(archive) as zf:
            for info, rel in members:
                dest = (root / Path(*rel.parts)).resolve()
                if root not in dest.parents:  # belt and braces: a folder symlink inside target
                    raise CorruptFileError(f"{archive}: unsafe archive: member {info.filename!r} escapes the target folder")
                dest.parent.mkdir(parents=True, exist_ok=True)
                h = hashlib.sha256()
                size = 0
                with zf.open(info) as src, open(dest, "xb") as out:
                    while True:
                        chunk = src.read(CHUNK)
                        if not chunk:
                            break
                        size += len(chunk)
                        if size > info.file_size:
                            raise CorruptFileError(f"{archive}: member {info.filename!r} is larger than its recorded size")
                        out.write(chunk)
                        h.update(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total)
                if size != info.file_size:
                    raise CorruptFileError(f"{archive}: member {info.filename!r} is truncated")
                os.chmod(dest, 0o644)
                written.append({"path": rel.as_posix(), "size": size, "sha256": h.hexdigest()})
    except zipfile.BadZipFile as exc:
        raise CorruptFileError(f"{archive}: damaged zip archive ({exc})") from None
    except FileExistsError as exc:
        raise CorruptFileError(f"{archive}: unsafe archive: {exc.filename} would be written twice") from None
    return written
