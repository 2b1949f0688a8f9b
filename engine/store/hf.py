"""Hugging Face repositories through `huggingface_hub.snapshot_download`.

The hub library does the transfer and keeps its own cache, so `HF_HOME` (cache location),
`HF_HUB_OFFLINE` (no network) and `HF_TOKEN` (gated or private repositories) work as they do for
diffusers. The store then takes its own copy (a hard link where the file system allows) of the
files the registry lists, so a stored artifact does not change when the hub cache is pruned.

With a mirror, the store does not use the hub at all: each file comes from `{mirror}/{repo}/{path}`
over plain HTTP (see artifacts.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

from engine.errors import ArtifactMissingError
from engine.store.download import DownloadError, OfflineError


def _hub_error(name: str):
    for module in ("huggingface_hub.errors", "huggingface_hub.utils"):
        try:
            mod = __import__(module, fromlist=[name])
        except ImportError:
            continue
        cls = getattr(mod, name, None)
        if isinstance(cls, type):
            return cls
    return type(f"_Missing{name}", (Exception,), {})


@contextlib.contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if not enabled:
        disable_progress_bars()
    try:
        yield
    finally:
        if not enabled and not was_disabled:
            enable_progress_bars()


def hub_cache_dir() -> str:
    """The hub cache as the environment says now (huggingface_hub reads HF_HOME once, at import)."""
    import os

    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return explicit
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return os.path.join(home, "hub")


def snapshot(
    repo: str,  # e.g. "google/ddpm-celebahq-256"
    revision: str,  # branch, tag or commit
    patterns: list[str],  # the files wanted (allow_patterns)
    *,
    local_only: bool = False,  # only the hub cache (GENCBM_OFFLINE=1): never the network
    show_progress: bool = True,  # the hub's own progress bars on stderr
    name: str = "",  # artifact name, for messages
) -> Path:
    """The folder of a snapshot of `repo` holding (at least) the wanted files that exist."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - a dependency of gencbm
        raise DownloadError("huggingface_hub is not installed: pip install huggingface_hub") from None
    label = name or repo
    try:
        with _progress_bars(show_progress):
            folder = snapshot_download(repo_id=repo, revision=revision, allow_patterns=patterns, local_files_only=local_only,
                                       cache_dir=hub_cache_dir())
    except (_hub_error("GatedRepoError"), _hub_error("RepositoryNotFoundError"), _hub_error("RevisionNotFoundError")) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ArtifactMissingError(
            f"{label}: Hugging Face refused {repo}@{revision} ({first}); if it needs a login, set HF_TOKEN, "
            f"or import a local copy with `gencbm download {label} --from-file FOLDER`"
        ) from None
    except _hub_error("LocalEntryNotFoundError") as exc:
        hub_offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")
        if local_only or hub_offline:
            why = "GENCBM_OFFLINE=1" if local_only else "HF_HUB_OFFLINE=1"
            raise OfflineError(
                f"{why}: {repo} is not in the Hugging Face cache (HF_HOME) and {label} is not in the store; "
                f"use a local --mirror folder or `gencbm download {label} --from-file FOLDER`"
            ) from None
        raise DownloadError(f"{label}: could not reach the Hugging Face Hub for {repo} ({str(exc).splitlines()[0]})") from None
    except OSError as exc:
        raise DownloadError(f"{label}: Hugging Face download of {repo} failed ({exc})") from None
    except Exception as exc:  # httpx / hub HTTP errors differ between versions
        if type(exc).__module__.startswith(("huggingface_hub", "httpx", "requests", "urllib3")):
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DownloadError(f"{label}: Hugging Face download of {repo} failed ({first})") from None
        raise
    return Path(folder)


def link_or_copy(src: Path, dest: Path) -> None:
    """Put `src` (resolving the hub cache's symlinks) at `dest`: a hard link if possible, else a copy."""
    real = Path(os.path.realpath(src))
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(real, dest)
    except OSError:
        shutil.copyfile(real, dest)
