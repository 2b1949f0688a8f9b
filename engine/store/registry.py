"""The artifact registry: every published file gencbm knows how to fetch, as data.

The entries live in `registry.json` beside this module (shipped as package data). A user or a test
can add or override entries with `GENCBM_REGISTRY=PATH[:PATH...]`, files in the same format.

Each entry names one artifact: where it comes from (`source`: a URL, a Google Drive id, a Hugging
Face repository, or a list of URLs), the file name it is stored and mirrored under, its kind, a
licence note, and what is known to verify it: an exact `size` and `sha256` where published, a
`sha256_prefix` where the publisher puts one in the file name (torch.hub's convention), otherwise
nothing, and the store records the sha256 at the first download (trust on first use).
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from engine.errors import UsageError

REGISTRY_FILE = Path(__file__).with_name("registry.json")
SOURCE_TYPES = ("url", "gdrive", "hf", "files")
KINDS = ("generator", "cbae", "cc", "classifiers", "splits", "weights")
_HEX = re.compile(r"^[0-9a-f]+$")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a multi-file artifact."""

    path: str  # relative path inside the artifact folder (also its path under a mirror)
    url: str | None = None  # where it is fetched from ("files" sources)
    optional: bool = False  # a missing optional file (HTTP 404) is not an error
    size: int | None = None  # exact size in bytes, when published
    sha256: str | None = None  # full hex digest, when published


@dataclass(frozen=True)
class Artifact:
    """A registry entry (see registry.json for the data)."""

    name: str  # registry name, e.g. "stylegan2-celebahq-256"
    kind: str  # generator | cbae | cc | classifiers | splits | weights
    description: str  # one line for `gencbm download --list`
    source_type: str  # url | gdrive | hf | files
    url: str | None = None  # "url" sources: the download URL
    gdrive_id: str | None = None  # "gdrive" sources: the Drive file id
    hf_repo: str | None = None  # "hf" sources: repository id, e.g. "google/ddpm-celebahq-256"
    hf_revision: str = "main"  # "hf" sources: branch, tag or commit
    require_one_of: tuple[str, ...] = ()  # "hf" sources: at least one of these files must exist
    files: tuple[RemoteFile, ...] = ()  # "hf" and "files" sources: the files of the artifact
    file: str | None = None  # single-file and zip artifacts: the stored (and mirrored) file name
    archive: str | None = None  # "zip": unpacked into the artifact folder after verification
    size: int | None = None  # exact size in bytes of `file`, when published
    sha256: str | None = None  # full sha256 of `file`, when published
    sha256_prefix: str | None = None  # leading hex digits of the sha256, when published in the file name
    approx_size: int | None = None  # for display only
    licence: str = ""  # licence note
    settings: dict = field(default_factory=dict, hash=False, compare=False)  # data for the code that uses it

    @property
    def multi_file(self) -> bool:
        """True when the stored artifact is a folder (several files, or an unpacked archive)."""
        return self.source_type in ("hf", "files") or self.archive is not None

    @property
    def checksum_state(self) -> str:
        """How a download is verified: "sha256", "prefix" or "tofu" (trust on first use)."""
        if self.sha256:
            return "sha256"
        if self.sha256_prefix:
            return "prefix"
        return "tofu"

    @property
    def origin(self) -> str:
        """A human-readable description of where it comes from."""
        if self.source_type == "url":
            return str(self.url)
        if self.source_type == "gdrive":
            return f"https://drive.google.com/uc?id={self.gdrive_id}"
        if self.source_type == "hf":
            return f"https://huggingface.co/{self.hf_repo} (revision {self.hf_revision})"
        return ", ".join(str(f.url) for f in self.files)

    def mirror_paths(self) -> list[str]:
        """Paths under a mirror's base URL: `{file}`, each file's path, or `{repo}/{path}` for HF."""
        if self.source_type == "hf":
            return [f"{self.hf_repo}/{f.path}" for f in self.files]
        if self.source_type == "files":
            return [f.path for f in self.files]
        return [str(self.file)]

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "source": self.source_type,
            "origin": self.origin,
            "file": self.file,
            "archive": self.archive,
            "size": self.size,
            "approx_size": self.approx_size,
            "sha256": self.sha256,
            "sha256_prefix": self.sha256_prefix,
            "checksum": self.checksum_state,
            "licence": self.licence,
            "mirror_paths": self.mirror_paths(),
            "settings": self.settings,
        }
        return doc


def _norm(name: str) -> str:
    """Forgiving form of a name: case-insensitive, with '_', ' ' and '-' equivalent."""
    return re.sub(r"[\s_\-]+", "-", name.strip().lower())


def _check_hex(value: Any, what: str, full: bool) -> str | None:
    if value is None:
        return None
    value = str(value).lower()
    if not _HEX.match(value) or (full and len(value) != 64) or (not full and not 4 <= len(value) <= 64):
        raise ValueError(f"{what}: not a {'sha256 hex digest' if full else 'sha256 hex prefix'}: {value!r}")
    return value


def _safe_relpath(path: str, what: str) -> str:
    p = str(path).replace("\\", "/")
    parts = p.split("/")
    if not p or p.startswith("/") or any(part in ("", ".", "..") for part in parts) or ":" in parts[0]:
        raise ValueError(f"{what}: unsafe relative path {path!r}")
    return p


def artifact_from_json(doc: dict[str, Any], where: str = "registry") -> Artifact:
    """Build and check one entry (ValueError with the entry's name on bad data)."""
    name = doc.get("name")
    if not isinstance(name, str) or not re.match(r"^[a-z0-9][a-z0-9.\-]*$", name):
        raise ValueError(f"{where}: bad artifact name {name!r} (lowercase letters, digits, '-' and '.')")
    what = f"{where}: {name}"
    kind = doc.get("kind")
    if kind not in KINDS:
        raise ValueError(f"{what}: kind must be one of {', '.join(KINDS)} (got {kind!r})")
    source = doc.get("source") or {}
    stype = source.get("type")
    if stype not in SOURCE_TYPES:
        raise ValueError(f"{what}: source.type must be one of {', '.join(SOURCE_TYPES)} (got {stype!r})")
    files: list[RemoteFile] = []
    kwargs: dict[str, Any] = {}
    if stype == "url":
        if not source.get("url"):
            raise ValueError(f"{what}: url source without a url")
        kwargs["url"] = source["url"]
    elif stype == "gdrive":
        if not re.match(r"^[A-Za-z0-9_\-]{10,}$", str(source.get("id", ""))):
            raise ValueError(f"{what}: bad Google Drive id {source.get('id')!r}")
        kwargs["gdrive_id"] = source["id"]
    elif stype == "hf":
        if not re.match(r"^[\w.\-]+/[\w.\-]+$", str(source.get("repo", ""))):
            raise ValueError(f"{what}: bad Hugging Face repo {source.get('repo')!r}")
        kwargs["hf_repo"] = source["repo"]
        kwargs["hf_revision"] = str(source.get("revision") or "main")
        for p in source.get("files", []):
            files.append(RemoteFile(path=_safe_relpath(p, what)))
        for p in source.get("optional_files", []):
            files.append(RemoteFile(path=_safe_relpath(p, what), optional=True))
        kwargs["require_one_of"] = tuple(_safe_relpath(p, what) for p in source.get("require_one_of", []))
        if not files:
            raise ValueError(f"{what}: hf source lists no files")
    else:  # files
        for f in source.get("files", []):
            if not f.get("url"):
                raise ValueError(f"{what}: file {f.get('path')!r} without a url")
            files.append(RemoteFile(
                path=_safe_relpath(f.get("path", ""), what), url=f["url"], optional=bool(f.get("optional", False)),
                size=f.get("size"), sha256=_check_hex(f.get("sha256"), what, full=True),
            ))
        if not files:
            raise ValueError(f"{what}: files source lists no files")
    file = doc.get("file")
    if stype in ("url", "gdrive"):
        if not file:
            raise ValueError(f"{what}: a {stype} source needs a file name")
        file = _safe_relpath(file, what)
        if "/" in file:
            raise ValueError(f"{what}: file must be a plain file name (got {file!r})")
    archive = doc.get("archive")
    if archive not in (None, "zip"):
        raise ValueError(f"{what}: archive must be \"zip\" or absent (got {archive!r})")
    if archive and stype not in ("url", "gdrive"):
        raise ValueError(f"{what}: only url and gdrive sources can be archives")
    size = doc.get("size")
    if size is not None and (not isinstance(size, int) or size < 0):
        raise ValueError(f"{what}: size must be a byte count (got {size!r})")
    return Artifact(
        name=name, kind=kind, description=str(doc.get("description", "")), source_type=stype,
        files=tuple(files), file=file, archive=archive, size=size,
        sha256=_check_hex(doc.get("sha256"), what, full=True),
        sha256_prefix=_check_hex(doc.get("sha256_prefix"), what, full=False),
        approx_size=doc.get("approx_size"), licence=str(doc.get("licence", "")),
        settings=dict(doc.get("settings") or {}), **kwargs,
    )


def _read_registry_file(path: Path) -> list[Artifact]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"registry file not found: {path} (from GENCBM_REGISTRY)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read registry file {path}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("artifacts"), list):
        raise UsageError(f"{path}: a registry file is a JSON object with an \"artifacts\" list")
    try:
        return [artifact_from_json(entry, where=str(path)) for entry in doc["artifacts"]]
    except (ValueError, TypeError, AttributeError) as exc:
        raise UsageError(str(exc)) from None


@lru_cache(maxsize=16)
def _load(extra: str, stamps: tuple) -> dict[str, Artifact]:
    entries: dict[str, Artifact] = {}
    paths = [REGISTRY_FILE] + [Path(p).expanduser() for p in extra.split(os.pathsep) if p]
    for path in paths:
        for art in _read_registry_file(path):
            entries[art.name] = art  # later files override earlier ones
    return entries


class Registry:
    """The known artifacts (built-in entries plus GENCBM_REGISTRY files)."""

    def __init__(self, entries: Iterable[Artifact]):
        self._entries = {a.name: a for a in entries}
        self._by_norm = {_norm(a.name): a for a in self._entries.values()}

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _norm(name) in self._by_norm

    def __iter__(self):
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def find(self, name: str) -> Artifact | None:
        """The entry for a name (case-insensitive, '_' ' ' '-' equivalent), or None."""
        return self._by_norm.get(_norm(name))

    def closest(self, name: str) -> str | None:
        hits = difflib.get_close_matches(_norm(name), list(self._by_norm), n=1, cutoff=0.5)
        return self._by_norm[hits[0]].name if hits else None

    def get(self, name: str) -> Artifact:
        """The entry for a name; UsageError naming the closest match and the known names."""
        art = self.find(name)
        if art is None:
            close = self.closest(name)
            hint = f"; did you mean {close!r}?" if close else ""
            raise UsageError(f"unknown artifact {name!r}{hint} (known: {', '.join(self.names())}; see `gencbm download --list`)")
        return art


def load_registry() -> Registry:
    """The registry in force: registry.json plus the files named by GENCBM_REGISTRY."""
    extra = os.environ.get("GENCBM_REGISTRY", "")
    stamps = []
    for p in [REGISTRY_FILE] + [Path(p).expanduser() for p in extra.split(os.pathsep) if p]:
        try:
            st = p.stat()
            stamps.append((st.st_size, st.st_mtime_ns))
        except OSError:
            stamps.append(None)
    return Registry(_load(extra, tuple(stamps)).values())
