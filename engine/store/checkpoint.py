"""Our own weight files: safetensors with JSON metadata (DESIGN rule 4)."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.errors import CorruptFileError, GencbmError, UsageError
from engine.store.atomic import atomic_path

META_KEY = "gencbm"  # the safetensors metadata entry holding our JSON document


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write tensors and a JSON-serialisable metadata document atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    contiguous = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata={META_KEY: json.dumps(meta, sort_keys=True)})
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of a file written by save_checkpoint; CorruptFileError if unreadable."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            raw = (f.metadata() or {}).get(META_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise
    except Exception as exc:  # safetensors raises its own error types for bad headers / truncation
        raise CorruptFileError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if raw is None:
        raise CorruptFileError(f"{path}: safetensors file without gencbm metadata")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CorruptFileError(f"{path}: malformed gencbm metadata ({exc})") from None
    return tensors, meta


# ------------------------------------------------------------------------------------------------
# Checkpoints of our own models (CB-AE, CC, classifiers): metadata and the generator identity.

CHECKPOINT_FORMAT = 1  # version of the metadata layout written by save_model_checkpoint


class GeneratorMismatchError(GencbmError):
    """A checkpoint was trained for another generator than the one in use (exit code 1)."""


@dataclass(frozen=True)
class GeneratorIdentity:
    """Which generator a model was trained on: its registry name (or file name) and its sha256."""

    name: str  # registry name, or the file name for a generator given by path
    sha256: str | None  # sha256 of the generator's file; None when unknown (e.g. a folder)

    def matches(self, other: "GeneratorIdentity") -> bool:
        """Same file (sha256) when both are known; otherwise the same name."""
        if self.sha256 and other.sha256:
            return self.sha256 == other.sha256
        return self.name == other.name

    def describe(self) -> str:
        return f"{self.name!r} (sha256 {self.sha256[:16] + '...' if self.sha256 else 'unknown'})"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256}

    @classmethod
    def from_json(cls, doc: Any) -> "GeneratorIdentity | None":
        if not isinstance(doc, dict) or not doc.get("name"):
            return None
        sha = doc.get("sha256")
        return cls(name=str(doc["name"]), sha256=str(sha) if sha else None)


def generator_identity(name_or_path: str | Path) -> GeneratorIdentity:
    """The identity of a generator argument: a registry name (sha256 from the store) or a path.

    For a path the sha256 comes from the store's hash cache (re-hashed only when the file
    changed). A path inside the store keeps its artifact's registry name, so a checkpoint trained
    on `stylegan2-celebahq-256` matches the same file given by path.
    """
    from engine.store import manifest as mf
    from engine.store.artifacts import resolve
    from engine.store.registry import load_registry

    text = str(name_or_path)
    path = resolve(text)
    art = load_registry().find(text) if not Path(text).expanduser().exists() else None
    name = art.name if art is not None else None
    if name is None:  # a path: is it a stored artifact?
        real = path.resolve()
        for entry_name, entry in mf.all_entries().items():
            if mf.entry_main_path(entry).resolve() == real:
                name = entry_name
                break
    if path.is_dir():
        return GeneratorIdentity(name=name or path.name, sha256=None)
    return GeneratorIdentity(name=name or path.name, sha256=mf.cached_sha256(path))


def _gencbm_version() -> str:
    try:
        from importlib.metadata import version

        return version("gencbm")
    except Exception:
        return "unknown"


def save_model_checkpoint(
    path: str | Path,  # where to write (.safetensors); written atomically
    tensors: dict[str, torch.Tensor],  # the model's state dict
    *,
    kind: str,  # what it is: "cbae", "cc", "classifier", ...
    generator: GeneratorIdentity | None,  # the generator it was trained on (None: not tied to one)
    concepts: Any = None,  # the concept spec (JSON-serialisable)
    latent: Any = None,  # the latent spec, e.g. {"kind": "w", "shape": [14, 512]}
    training: Any = None,  # the training config (JSON-serialisable)
    extra: dict[str, Any] | None = None,  # anything else the loader needs
) -> Path:
    """Write a gencbm model checkpoint: safetensors + JSON metadata naming the generator it belongs to."""
    meta: dict[str, Any] = {
        "kind": kind,
        "format_version": CHECKPOINT_FORMAT,
        "gencbm_version": _gencbm_version(),
        "generator": generator.to_json() if generator is not None else None,
        "concepts": concepts,
        "latent": latent,
        "training": training,
    }
    if extra:
        for key, value in extra.items():
            meta.setdefault(key, value)
    return save_checkpoint(path, tensors, meta)


def check_generator(meta: dict[str, Any], generator: GeneratorIdentity, *, path: str | Path, force: bool = False) -> None:
    """Refuse a checkpoint trained for another generator (GeneratorMismatchError) unless `force`."""
    trained = GeneratorIdentity.from_json(meta.get("generator"))
    if trained is None or trained.matches(generator):
        return
    message = (
        f"{path} was trained for generator {trained.describe()} but the generator in use is {generator.describe()}"
    )
    if not force:
        raise GeneratorMismatchError(message + "; pass --force to load it anyway")
    warnings.warn(message + " (loading anyway: --force)", stacklevel=2)


def load_model_checkpoint(
    path: str | Path,  # a file written by save_model_checkpoint
    *,
    kind: str | tuple[str, ...] | None = None,  # expected kind(s); None: any
    generator: GeneratorIdentity | None = None,  # the generator in use; None: no identity check
    force: bool = False,  # load even when the generator identity differs (with a warning)
    device: str | torch.device = "cpu",
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of a model checkpoint, after checking its kind and generator identity."""
    tensors, meta = load_checkpoint(path, device=device)
    if kind is not None:
        kinds = (kind,) if isinstance(kind, str) else tuple(kind)
        if meta.get("kind") not in kinds:
            raise UsageError(f"{path} is a {meta.get('kind')!r} checkpoint, not {' or '.join(repr(k) for k in kinds)}")
    if generator is not None:
        check_generator(meta, generator, path=path, force=force)
    return tensors, meta
