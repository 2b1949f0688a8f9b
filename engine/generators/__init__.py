"""Generators: StyleGAN2 (written here, loading NVIDIA pickles safely) and how to find them.

`load_generator(name_or_path)` accepts:
- a path to an NVIDIA network pickle (`.pkl`): imported without executing its code, then kept in
  the store as a safetensors conversion so later loads never unpickle;
- a path to a gencbm generator file (`.safetensors` with gencbm metadata);
- the name of an artifact in the store (what `gencbm download NAME` fetched).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch

from engine.errors import ArtifactMissingError, CorruptFileError, UsageError
from engine.generators.stylegan2 import Generator, one_hot, z_from_seeds

GENERATOR_KIND = "stylegan2-generator"
FORMAT_VERSION = 1

__all__ = ["Generator", "load_generator", "save_generator", "resolve_generator_path", "z_from_seeds", "one_hot"]


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Digest of names, dtypes, shapes and bytes of a state dict (detects flipped bytes in a file)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_generator(G: Generator, path: str | Path, source: str | None = None, extra: dict | None = None) -> Path:
    """Write G as safetensors with its constructor config and a digest of its tensors (atomic).

    `extra` adds JSON-serialisable metadata (the toyfaces generator records its world there)."""
    from engine.store.checkpoint import save_checkpoint

    state = G.state_dict()
    meta = {**(extra or {}), "kind": GENERATOR_KIND, "format_version": FORMAT_VERSION, "config": G.init_kwargs, "source": source,
            "tensor_sha256": tensors_sha256(state)}
    return save_checkpoint(path, state, meta)


def _load_safetensors_generator(path: Path) -> Generator:
    from engine.generators.nvidia_pickle import fill_generator
    from engine.store.checkpoint import load_checkpoint

    tensors, meta = load_checkpoint(path)
    if meta.get("kind") != GENERATOR_KIND or not isinstance(meta.get("config"), dict):
        raise CorruptFileError(f"{path}: not a gencbm StyleGAN2 generator file (kind {meta.get('kind')!r})")
    digest = meta.get("tensor_sha256")
    if digest is not None and tensors_sha256(tensors) != digest:
        raise CorruptFileError(f"{path}: tensor data does not match its recorded sha256 (the file is corrupt)")
    try:
        G = Generator(**meta["config"])
    except (TypeError, ValueError) as exc:
        raise CorruptFileError(f"{path}: cannot build a generator from its stored config ({exc})") from None
    G = fill_generator(G, tensors, str(path))
    G.gencbm_meta = meta  # e.g. the toyfaces world that decides ground truth
    return G


def _conversion_path(pkl: Path, key: str) -> Path:
    from engine.store.paths import converted_dir

    st = pkl.stat()
    ident = f"{pkl.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{key}|v{FORMAT_VERSION}"
    digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
    return converted_dir() / f"{pkl.stem}-{key}-{digest}.safetensors"


def _conversion_source(path: Path) -> str | None:
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            import json

            return json.loads((f.metadata() or {}).get("gencbm", "{}")).get("source")
    except Exception:
        return None


def _load_pickle_generator(pkl: Path, key: str, use_cache: bool) -> Generator:
    from engine.generators.nvidia_pickle import load_network_pickle

    cache = _conversion_path(pkl, key) if use_cache else None
    if cache is not None and cache.is_file():
        try:
            return _load_safetensors_generator(cache)
        except CorruptFileError:
            cache.unlink(missing_ok=True)  # a damaged conversion is rebuilt from the pickle
    G = load_network_pickle(pkl, key=key)
    if cache is not None:
        try:
            for old in cache.parent.glob(f"{pkl.stem}-{key}-*.safetensors"):  # conversions of an older version of this file
                if old != cache and _conversion_source(old) == str(pkl.resolve()):
                    old.unlink(missing_ok=True)
            save_generator(G, cache, source=str(pkl.resolve()))
        except OSError as exc:
            warnings.warn(f"could not keep a converted copy of {pkl.name} in the store ({exc}); it will be re-imported next time", stacklevel=2)
    return G


def resolve_generator_path(name_or_path: str | os.PathLike) -> Path:
    """The file behind a generator argument: an existing path, or an artifact in the store."""
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        raise UsageError(f"{p} is a folder; pass the network pickle (.pkl) or generator file (.safetensors) inside it")
    name = str(name_or_path)
    looks_like_path = os.sep in name or name.endswith((".pkl", ".safetensors", ".pt"))
    if not looks_like_path:
        from engine.store.artifacts import resolve_artifact
        from engine.toyfaces.builtin import builtin_generator

        builtin = builtin_generator(name)
        if builtin is not None:
            return builtin

        found = resolve_artifact(name)  # exit 3 naming `gencbm download NAME`, 4 if corrupt
        if found.is_dir():
            raise UsageError(f"artifact {name!r} is a folder, not a StyleGAN2 generator file")
        return found
    raise ArtifactMissingError(f"no such file: {p}")


def load_generator(
    name_or_path: str | os.PathLike,  # artifact name or file path (.pkl NVIDIA pickle, .safetensors)
    device: str | torch.device = "cpu",  # where the returned module lives
    pickle_key: str = "G_ema",  # which network of an NVIDIA pickle to load (G_ema, G)
    use_cache: bool = True,  # keep/read the safetensors conversion of a pickle in the store
) -> Generator:
    """A frozen StyleGAN2 generator in eval mode, with .z_dim .c_dim .w_dim .num_ws .img_resolution
    .img_channels, .mapping(z, c, truncation_psi, truncation_cutoff) -> [B, num_ws, w_dim] and
    .synthesis(ws, noise_mode) -> [B, C, H, W] in [-1, 1]."""
    from engine.cpu import tune_allocator

    tune_allocator()  # large activations are reused instead of re-faulted on every layer (engine/cpu.py)
    path = resolve_generator_path(name_or_path)
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:1] == b"\x80" or path.suffix == ".pkl":
        G = _load_pickle_generator(path, pickle_key, use_cache)
    else:
        G = _load_safetensors_generator(path)
    return G.eval().requires_grad_(False).to(device)
