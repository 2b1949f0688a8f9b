"""Our own weight files: safetensors with JSON metadata (DESIGN rule 4)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from engine.errors import CorruptFileError
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
