"""Fetching, importing, verifying and resolving the artifacts of the registry.

    download("stylegan2-celebahq-256")          # fetch (or find already stored), verify, record
    download(name, from_file="~/Downloads/x")     # import a file obtained another way
    download(name, mirror="http://host/models")   # every file from {mirror}/{file name}
    verify(name)                                  # re-hash what is stored
    resolve_artifact(name) -> Path                # the verified main file (or folder) of a stored artifact
    resolve("stylegan2-celebahq-256" or "x.pkl")  # a registry name or a path, for every CLI option

Layout under the store root (`GENCBM_HOME`): `artifacts/NAME/FILE` for single-file artifacts,
`artifacts/NAME/` for folders (zip archives unpacked, Hugging Face repositories, file lists),
`manifest.json` (see manifest.py), `locks/NAME.lock`.

A transfer goes to a temporary file (or staging folder) beside its destination and is moved into
place only after its sha256 passed: the published sha256 or sha256 prefix where there is one,
else the sha256 recorded at the first download (trust on first use). One process at a time
fetches a given artifact (a file lock); a second one waits and then finds it stored.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from engine.errors import ArtifactMissingError, CorruptFileError, UsageError
from engine.store import manifest as mf
from engine.store.download import (
    OfflineError,
    RetryPolicy,
    Transfer,
    UnavailableError,
    copy_local,
    fetch_url,
    is_local,
    join_url,
    local_path,
    offline,
)
from engine.store.paths import artifact_dir, home
from engine.store.registry import Artifact, Registry, load_registry

ProgressFn = Callable[[str, int, "int | None"], None]  # (label, bytes done, total bytes or None)
InfoFn = Callable[[str], None]

__all__ = [
    "FetchOptions", "download", "verify", "resolve_artifact", "resolve", "stored_path", "list_artifacts",
    "mirror_from_env",
]


def mirror_from_env() -> str | None:
    value = os.environ.get("GENCBM_MIRROR", "").strip()
    return value or None


@dataclass
class FetchOptions:
    mirror: str | None = None  # base URL or folder replacing every download host; None: GENCBM_MIRROR
    force: bool = False  # fetch again even when a good copy is stored
    from_file: str | Path | None = None  # import this file (or folder) instead of downloading
    policy: RetryPolicy = field(default_factory=RetryPolicy)  # retries, backoff, timeouts
    progress: ProgressFn | None = None  # byte progress of each transfer, hash and unpack
    info: InfoFn | None = None  # one-line messages (retries, resumes, trust on first use)
    hub_progress: bool = True  # let huggingface_hub draw its own progress bars

    def say(self, message: str) -> None:
        if self.info is not None:
            self.info(message)

    def bar(self, label: str) -> Callable[[int, int | None], None] | None:
        if self.progress is None:
            return None
        progress = self.progress
        return lambda done, total: progress(label, done, total)


# ------------------------------------------------------------------------------------------------
# Checksums.


class _Expect:
    """What a fetched file must hash to, and the pins to record once everything passed."""

    def __init__(self, art: Artifact, pins: dict[str, str]):
        self.art = art
        self.pins = pins
        self.new_pins: dict[str, str] = {}
        self.methods: set[str] = set()

    def check(self, key: str, digest: str, *, sha256: str | None, prefix: str | None, where: str) -> None:
        name = self.art.name
        if sha256 and digest != sha256:
            raise CorruptFileError(
                f"{name}: {key} from {where} does not match its published sha256 (expected {sha256}, got {digest}); nothing was stored"
            )
        if prefix and not digest.startswith(prefix):
            raise CorruptFileError(
                f"{name}: {key} from {where} does not match the sha256 prefix {prefix} in its published name (got {digest}); nothing was stored"
            )
        pin = self.pins.get(key)
        if pin and digest != pin:
            raise CorruptFileError(
                f"{name}: {key} from {where} differs from the file first downloaded (sha256 {pin}, recorded in "
                f"{mf.manifest_path()} under \"pins\"; got {digest}); nothing was stored. If the publisher really changed it, "
                f"delete that pin and download again"
            )
        if sha256:
            self.methods.add("sha256")
        elif prefix:
            self.methods.add("sha256-prefix")
        elif pin:
            self.methods.add("pinned")
        else:
            self.methods.add("tofu")
        if not sha256 and not pin:
            self.new_pins[key] = digest

    @property
    def verified_by(self) -> str:
        for method in ("tofu", "pinned", "sha256-prefix", "sha256"):  # the weakest one used
            if method in self.methods:
                return method
        return "sha256"


# ------------------------------------------------------------------------------------------------
# Locks, staging and placement.


@contextlib.contextmanager
def _artifact_lock(name: str, opts: FetchOptions) -> Iterator[None]:
    from filelock import FileLock, Timeout

    path = mf.locks_dir() / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0.2)
    except Timeout:
        opts.say(f"{name}: another gencbm process is fetching it; waiting")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _staging(name: str) -> Path:
    return home() / "artifacts" / f".{name}.staging"


def _clean_stale(name: str, art: Artifact) -> None:
    shutil.rmtree(_staging(name), ignore_errors=True)
    folder = artifact_dir(name)
    if folder.is_dir() and not art.multi_file:
        for stale in folder.glob(".*.part"):
            stale.unlink(missing_ok=True)
    for stale in (home() / "artifacts").glob(f".{name}.*.part"):
        stale.unlink(missing_ok=True)
    for stale in (home() / "artifacts").glob(f".{name}.old-*"):  # left by a swap that was interrupted
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


def _swap_in(staging: Path, final: Path) -> None:
    """Replace `final` (file or folder) by the `staging` folder."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists() or final.is_symlink():
        os.replace(final, old)
    os.replace(staging, final)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def _rel(path: Path) -> str:
    return path.relative_to(home()).as_posix()


def _entry(art: Artifact, *, main: Path, fetched_from: str, origin: str, files: list[dict], sha256: str | None,
           size: int, verified_by: str) -> dict[str, Any]:
    return {
        "name": art.name,
        "kind": art.kind,
        "source": art.source_type,
        "fetched_from": fetched_from,
        "origin": origin,
        "path": _rel(main),
        "multi_file": art.multi_file,
        "file": art.file,
        "size": size,
        "sha256": sha256,
        "verified_by": verified_by,
        "time": mf.now_iso(),
        "files": files,
    }


# ------------------------------------------------------------------------------------------------
# Transfers of one file from wherever it comes from.


def _mirror(opts: FetchOptions) -> str | None:
    return opts.mirror if opts.mirror else mirror_from_env()


def _offline_error(art: Artifact) -> OfflineError:
    return OfflineError(
        f"GENCBM_OFFLINE=1 and {art.name} is not in the store: fetch it where there is network, point --mirror "
        f"(or GENCBM_MIRROR) at a local folder, or import it with `gencbm download {art.name} --from-file PATH`"
    )


def _get_one(art: Artifact, url: str, dest: Path, opts: FetchOptions, label: str, *, expected_size: int | None,
             allow_html: bool = False) -> Transfer:
    """Fetch one URL or local path into `dest`."""
    if is_local(url):
        return copy_local(local_path(url), dest, label=label, expected_size=expected_size, progress=opts.bar(label))
    if offline():
        raise _offline_error(art)
    return fetch_url(url, dest, label=label, expected_size=expected_size, policy=opts.policy, progress=opts.bar(label),
                     info=opts.info, allow_html=allow_html)


def _fetch_main_file(art: Artifact, dest: Path, opts: FetchOptions) -> tuple[Transfer, str, str]:
    """The file of a url/gdrive artifact into `dest`: (transfer, fetched_from, origin)."""
    mirror = _mirror(opts)
    if mirror:
        url = join_url(mirror, str(art.file))
        try:
            return _get_one(art, url, dest, opts, art.name, expected_size=art.size), "mirror", url
        except (UnavailableError, FileNotFoundError):
            raise ArtifactMissingError(
                f"the mirror {mirror} has no {art.file} for {art.name} (mirrors serve every file at {{mirror}}/{{file name}})"
            ) from None
    if offline():
        raise _offline_error(art)
    if art.source_type == "gdrive":
        from engine.store.gdrive import fetch_drive

        t = fetch_drive(art.name, str(art.gdrive_id), str(art.file), dest, expected_size=art.size, policy=opts.policy,
                        progress=opts.bar(art.name), info=opts.info)
        return t, "source", art.origin
    try:
        t = fetch_url(str(art.url), dest, label=art.name, expected_size=art.size, policy=opts.policy,
                      progress=opts.bar(art.name), info=opts.info)
    except UnavailableError as exc:
        raise ArtifactMissingError(f"{exc}; if you have the file, run: gencbm download {art.name} --from-file PATH/TO/{art.file}") from None
    return t, "source", str(art.url)


# ------------------------------------------------------------------------------------------------
# The three shapes of artifact.


def _single_file(art: Artifact, opts: FetchOptions, expect: _Expect) -> dict[str, Any]:
    folder = artifact_dir(art.name)
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f".{art.file}.part"
    final = folder / str(art.file)
    try:
        if opts.from_file is not None:
            src = Path(opts.from_file).expanduser()
            t = copy_local(src, part, label=art.name, expected_size=art.size, progress=opts.bar(f"{art.name} (import)"))
            fetched_from, origin = "file", str(src.resolve())
        else:
            t, fetched_from, origin = _fetch_main_file(art, part, opts)
        expect.check(str(art.file), t.sha256, sha256=art.sha256, prefix=art.sha256_prefix, where=origin)
        os.replace(part, final)
    finally:
        part.unlink(missing_ok=True)
    mf.remember_sha256(final, t.sha256)
    files = [{"path": str(art.file), "size": t.size, "sha256": t.sha256}]
    return _entry(art, main=final, fetched_from=fetched_from, origin=origin, files=files, sha256=t.sha256, size=t.size,
                  verified_by=expect.verified_by)


def _archive(art: Artifact, opts: FetchOptions, expect: _Expect) -> dict[str, Any]:
    from engine.store.unzip import safe_extract

    root = home() / "artifacts"
    root.mkdir(parents=True, exist_ok=True)
    part = root / f".{art.name}.{art.file}.part"
    staging = _staging(art.name)
    final = artifact_dir(art.name)
    try:
        if opts.from_file is not None:
            archive = Path(opts.from_file).expanduser()
            if not archive.is_file():
                raise FileNotFoundError(2, "No such file", str(archive))
            size = archive.stat().st_size
            if art.size is not None and size != art.size:
                raise CorruptFileError(f"{art.name}: {archive} has {size} bytes but the published size is {art.size}; nothing was stored")
            digest = mf.sha256_file(archive, opts.bar(f"{art.name} (verify)"))
            fetched_from, origin = "file", str(archive.resolve())
        else:
            t, fetched_from, origin = _fetch_main_file(art, part, opts)
            archive, size, digest = part, t.size, t.sha256
        expect.check(str(art.file), digest, sha256=art.sha256, prefix=art.sha256_prefix, where=origin)
        files = safe_extract(archive, staging, progress=opts.bar(f"{art.name} (unpack)"))
        _swap_in(staging, final)
    finally:
        part.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    for f in files:
        mf.remember_sha256(final / f["path"], f["sha256"])
    return _entry(art, main=final, fetched_from=fetched_from, origin=origin, files=files, sha256=digest, size=size,
                  verified_by=expect.verified_by)


def _file_list(art: Artifact, opts: FetchOptions, expect: _Expect) -> dict[str, Any]:
    """A folder of several files: "files" sources, and Hugging Face repositories."""
    staging = _staging(art.name)
    final = artifact_dir(art.name)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    mirror = _mirror(opts)
    got: list[dict] = []
    origins: list[str] = []
    try:
        hub_folder: Path | None = None
        if opts.from_file is None and not mirror and art.source_type == "hf":
            from engine.store.hf import snapshot

            patterns = [f.path for f in art.files]
            hub_folder = snapshot(str(art.hf_repo), art.hf_revision, patterns, local_only=offline(),
                                  show_progress=opts.hub_progress, name=art.name)
            fetched_from = "hf-cache" if offline() else "source"
        elif opts.from_file is not None:
            src_root = Path(opts.from_file).expanduser()
            if not src_root.is_dir():
                raise UsageError(f"{art.name} is a folder of files ({', '.join(f.path for f in art.files)}): pass the folder holding them to --from-file")
            fetched_from = "file"
        else:
            fetched_from = "mirror" if mirror else "source"
        for rf in art.files:
            dest = staging / rf.path
            label = f"{art.name}/{rf.path}"
            if hub_folder is not None:
                src = hub_folder / rf.path
                if not src.exists():
                    if rf.optional:
                        continue
                    raise ArtifactMissingError(f"{art.name}: {art.hf_repo} has no {rf.path}")
                from engine.store.hf import link_or_copy

                link_or_copy(src, dest)
                digest = mf.sha256_file(dest, opts.bar(f"{label} (verify)"))
                origin = f"hf://{art.hf_repo}@{art.hf_revision}/{rf.path}"
                size = dest.stat().st_size
            else:
                if opts.from_file is not None:
                    url = str(Path(opts.from_file).expanduser() / rf.path)
                elif mirror:
                    url = join_url(mirror, f"{art.hf_repo}/{rf.path}" if art.source_type == "hf" else rf.path)
                else:
                    url = str(rf.url)
                part = dest.with_name(f".{dest.name}.part")
                try:
                    t = _get_one(art, url, part, opts, label, expected_size=rf.size, allow_html=rf.path.endswith((".html", ".htm")))
                except (UnavailableError, FileNotFoundError):
                    part.unlink(missing_ok=True)
                    if rf.optional:
                        continue
                    where = "the folder given to --from-file" if opts.from_file is not None else (f"the mirror {mirror}" if mirror else "the source")
                    raise ArtifactMissingError(f"{art.name}: {where} has no {rf.path} ({url})") from None
                os.replace(part, dest)
                digest, size, origin = t.sha256, t.size, url
            expect.check(rf.path, digest, sha256=rf.sha256, prefix=None, where=origin)
            got.append({"path": rf.path, "size": size, "sha256": digest})
            origins.append(origin)
        present = {f["path"] for f in got}
        if art.require_one_of and not present.intersection(art.require_one_of):
            raise ArtifactMissingError(f"{art.name}: none of {', '.join(art.require_one_of)} was found")
        _swap_in(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for f in got:
        mf.remember_sha256(final / f["path"], f["sha256"])
    origin = origins[0].rsplit("/", 1)[0] if origins else ""
    return _entry(art, main=final, fetched_from=fetched_from, origin=origin, files=got, sha256=None,
                  size=sum(f["size"] for f in got), verified_by=expect.verified_by)


# ------------------------------------------------------------------------------------------------
# Checking what is stored.


def _check_entry(entry: dict[str, Any], *, full: bool, progress: ProgressFn | None = None) -> tuple[str, str]:
    """("ok" | "missing" | "corrupt", detail) for a manifest entry. `full` re-hashes every file."""
    folder = mf.entry_folder(entry)
    files = entry.get("files") or []
    if not files:
        return "corrupt", "the manifest entry lists no files"
    for f in files:
        path = folder / f["path"]
        if not path.is_file():
            return "missing", str(path)
        size = path.stat().st_size
        if f.get("size") is not None and size != f["size"]:
            return "corrupt", f"{path} has {size} bytes, {f['size']} expected"
        bar = (lambda d, t, _l=f"{entry['name']}/{f['path']} (verify)": progress(_l, d, t)) if progress else None
        if full:
            digest = mf.sha256_file(path, bar)
            if digest == f.get("sha256"):
                mf.remember_sha256(path, digest)
        else:
            digest = mf.cached_sha256(path, bar)
        if digest != f.get("sha256"):
            return "corrupt", f"{path}: sha256 {digest}, {f.get('sha256')} expected"
    return "ok", ""


def _corrupt(name: str, detail: str) -> CorruptFileError:
    return CorruptFileError(f"stored artifact {name} is corrupt ({detail}); never loading it: fetch it again with `gencbm download {name} --force`")


def stored_path(name: str) -> Path | None:
    """The verified main path of a stored artifact; None when the manifest has no such entry.

    CorruptFileError (exit 4) when a stored file no longer matches its sha256, ArtifactMissingError
    (exit 3) when a stored file has disappeared. Verification re-hashes a file only when its size or
    modification time changed since it was last hashed.
    """
    reg = load_registry()
    art = reg.find(name)
    key = art.name if art else name
    entry = mf.get_entry(key)
    if entry is None:
        return None
    status, detail = _check_entry(entry, full=False)
    if status == "missing":
        raise ArtifactMissingError(f"stored artifact {key} lost a file ({detail}); fetch it again with `gencbm download {key}`")
    if status == "corrupt":
        raise _corrupt(key, detail)
    return mf.entry_main_path(entry)


def resolve_artifact(name: str) -> Path:
    """The verified main file (or folder) of a stored artifact, by registry name.

    ArtifactMissingError (exit 3) naming `gencbm download NAME` when it is not stored yet;
    CorruptFileError (exit 4) naming `gencbm download NAME --force` when it no longer verifies.
    """
    found = stored_path(name)
    if found is not None:
        return found
    reg = load_registry()
    art = reg.find(name)
    if art is not None:
        raise ArtifactMissingError(f"{art.name} is not in the store yet; fetch it with `gencbm download {art.name}`")
    close = reg.closest(name)
    hint = f" (did you mean {close!r}?)" if close else ""
    raise ArtifactMissingError(f"{name!r} is not a known artifact{hint}; `gencbm download --list` shows them")


def resolve(
    value: str | os.PathLike,  # a registry name, or a path to a file or folder
    kinds: tuple[str, ...] | None = None,  # accepted registry kinds, e.g. ("generator",)
    what: str = "artifact",  # what the option takes, for messages ("generator", "classifier set")
) -> Path:
    """The file or folder behind an option value: an existing path, or a stored artifact by name.

    A missing path: FileNotFoundError-like ArtifactMissingError (exit 3); a registry name not yet
    downloaded: exit 3 naming `gencbm download NAME`; a corrupt stored copy: exit 4; a name that is
    neither: ArtifactMissingError (exit 3) with the closest known name of the right kind.
    """
    p = Path(value).expanduser()
    if p.exists():
        return p
    text = str(value)
    reg = load_registry()
    art = reg.find(text)
    if art is not None:
        if kinds and art.kind not in kinds:
            raise UsageError(f"{art.name} is a {art.kind}, not a {what} ({' or '.join(kinds)})")
        return resolve_artifact(art.name)
    found = stored_path(text)
    if found is not None:
        return found
    if os.sep in text or "/" in text or Path(text).suffix in (".pkl", ".pt", ".pth", ".safetensors", ".zip", ".json", ".txt"):
        raise ArtifactMissingError(f"no such file: {p}")
    names = [a.name for a in reg if not kinds or a.kind in kinds]
    import difflib

    close = difflib.get_close_matches(text.lower(), names, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ArtifactMissingError(f"{text!r} is neither a file nor a known {what}{hint} (known: {', '.join(names)}; `gencbm download --list` shows them)")


# ------------------------------------------------------------------------------------------------
# The public operations.


def download(name: str, options: FetchOptions | None = None, registry: Registry | None = None) -> dict[str, Any]:
    """Fetch (or import) one artifact into the store and return its manifest entry.

    The returned entry has an extra "status": "downloaded", "imported" or "present" (already
    stored and verified; nothing fetched).
    """
    opts = options or FetchOptions()
    reg = registry or load_registry()
    art = reg.get(name)
    with _artifact_lock(art.name, opts):
        entry = mf.get_entry(art.name)
        if entry is not None and not opts.force and opts.from_file is None:
            status, detail = _check_entry(entry, full=False, progress=opts.progress)
            if status == "ok":
                return {**entry, "status": "present"}
            if status == "corrupt":
                raise _corrupt(art.name, detail)
            opts.say(f"{art.name}: a stored file is missing ({detail}); fetching it again")
        _clean_stale(art.name, art)
        expect = _Expect(art, mf.get_pins(art.name))
        if art.archive:
            new = _archive(art, opts, expect)
        elif art.multi_file:
            new = _file_list(art, opts, expect)
        else:
            new = _single_file(art, opts, expect)
        if expect.new_pins:
            mf.set_pins(art.name, expect.new_pins)
            if "tofu" in expect.methods:
                opts.say(f"{art.name}: no published checksum; recorded its sha256 (trust on first use) and will check it from now on")
        mf.put_entry(new)
        return {**new, "status": "imported" if opts.from_file is not None else "downloaded"}


def verify(name: str, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Re-hash every stored file of an artifact: its manifest entry with "status" ok/corrupt/missing."""
    reg = load_registry()
    art = reg.find(name)
    key = art.name if art else name
    entry = mf.get_entry(key)
    if entry is None:
        if art is None:
            reg.get(name)  # UsageError with the closest name
        return {"name": key, "status": "missing", "detail": f"not in the store; fetch it with `gencbm download {key}`"}
    status, detail = _check_entry(entry, full=True, progress=progress)
    return {**entry, "status": status, "detail": detail}


def stored_names() -> list[str]:
    return sorted(mf.all_entries())


def list_artifacts(registry: Registry | None = None) -> list[dict[str, Any]]:
    """Every registry entry with whether (and where) it is stored. Nothing is hashed."""
    reg = registry or load_registry()
    stored = mf.all_entries()
    out = []
    for art in reg:
        doc = art.to_json()
        entry = stored.get(art.name)
        doc["stored"] = entry is not None
        doc["stored_path"] = str(mf.entry_main_path(entry)) if entry else None
        doc["stored_sha256"] = entry.get("sha256") if entry else None
        doc["stored_size"] = entry.get("size") if entry else None
        out.append(doc)
    return out
