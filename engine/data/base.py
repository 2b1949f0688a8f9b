"""What every concept dataset shares: the sample contract, image files, and annotation parsing.

A dataset yields `(image, labels)`: image uint8 [3, S, S] (RGB, S the dataset's input size),
labels int64 [K] in {0, 1}, one per selected concept. uint8 keeps worker-to-trainer transfers
small; `to_unit_range` turns a batch into floats in [-1, 1], the range every gencbm model and
classifier sees (dividing by 127.5 and subtracting 1 gives exactly torchvision's ToTensor()
value u8 / 255 once mapped back to [0, 1]).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from engine.errors import CorruptFileError, GencbmError, UsageError

ProgressFn = Callable[[str, int, int], None]  # (label, done, total)


class ImageReadError(GencbmError):
    """An image file of a dataset is missing or cannot be decoded (exit code 1).

    A DataLoader worker re-raises an exception in the main process as the same type with a message
    that holds the worker's whole traceback; the one line that names the file is recovered here.
    """

    def __init__(self, message: str):
        text = str(message)
        if "Traceback" in text:
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            last = lines[-1] if lines else text
            marker = f"{type(self).__name__}: "
            text = last.split(marker, 1)[1] if marker in last else last
        super().__init__(text)


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images [B, 3, H, W] -> float32 in [-1, 1]."""
    return images.to(torch.float32).div_(127.5).sub_(1.0)


@dataclass(frozen=True)
class DatasetInfo:
    """Facts about a dataset that do not depend on the files on disk."""

    name: str  # the --dataset value
    native_size: int  # the input size the original project trains its classifiers at
    eval_split: str  # the split train-classifier evaluates on ("test"; "val" for celeba64, as the original)
    splits: tuple[str, ...]  # the splits it has
    needs_root: bool  # whether --data-root is required
    default_concepts: tuple[str, ...]  # what `--concepts all` trains (the original project's concept set)
    resize: str  # "square": resize to S x S; "crop": shorter side to S, then a centre crop (as the original)


class ConceptDataset(torch.utils.data.Dataset):
    """Base class: `concepts` (selected names), `labels` [N, K], `image_size`, and sample access."""

    info: DatasetInfo
    split: str
    concepts: list[str]
    labels: torch.Tensor  # [N, K] int64
    image_size: int

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:  # -> uint8 [3, S, S], int64 [K]
        raise NotImplementedError

    def prepare(self, progress: ProgressFn | None = None) -> None:
        """Do any slow one-time work up front (rendering, checks); a no-op by default."""

    def in_memory(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(images uint8 [N, 3, S, S], labels [N, K]) when the whole split is held in memory, else None."""
        return None

    def label_balance(self) -> list[float]:
        """Fraction of positives per selected concept."""
        if len(self) == 0:
            return [0.0] * len(self.concepts)
        return [float(v) for v in self.labels.to(torch.float64).mean(dim=0)]


# ------------------------------------------------------------------------------------------------
# Image files.


def _resize_square(img, size: int):
    from PIL import Image

    return img.resize((size, size), Image.BILINEAR)


def _resize_crop(img, size: int):
    """Shorter side to `size` (longer side int(size * long / short)), then a centre crop of size x size:
    torchvision's Resize(size) followed by CenterCrop(size) on a PIL image."""
    from PIL import Image

    w, h = img.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BILINEAR)
    left = int(round((nw - size) / 2.0))
    top = int(round((nh - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def read_image(path: Path, size: int, resize: str = "square") -> torch.Tensor:
    """An image file as uint8 [3, size, size] (RGB); ImageReadError naming the file when unreadable."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            img = im.convert("RGB")
            img = _resize_crop(img, size) if resize == "crop" else _resize_square(img, size)
            arr = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageReadError(f"missing image: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageReadError(f"cannot read image {path}: {detail}") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


class ImageFileDataset(ConceptDataset):
    """Samples that are image files on disk with precomputed labels."""

    def __init__(self, info: DatasetInfo, split: str, files: Sequence[Path], labels: torch.Tensor,
                 concepts: list[str], size: int):
        if labels.ndim != 2 or labels.shape[0] != len(files) or labels.shape[1] != len(concepts):
            raise ValueError(f"labels must be [{len(files)}, {len(concepts)}] (got {tuple(labels.shape)})")
        self.info = info
        self.split = split
        self.files = [Path(f) for f in files]
        self.labels = labels.to(torch.int64)
        self.concepts = list(concepts)
        self.image_size = int(size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return read_image(self.files[index], self.image_size, self.info.resize), self.labels[index]

    def prepare(self, progress: ProgressFn | None = None) -> None:
        check_files_exist(self.files, f"{self.info.name} {self.split} split")


def check_files_exist(files: Iterable[Path], what: str) -> None:
    """ImageReadError naming the first missing image (and how many are missing) before any training."""
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        more = f" (and {len(missing) - 1} more of the {what})" if len(missing) > 1 else ""
        raise ImageReadError(f"missing image: {missing[0]}{more}")


# ------------------------------------------------------------------------------------------------
# Finding files and parsing annotation text.


def require_root(info: DatasetInfo, root: str | os.PathLike | None) -> Path:
    if root is None or str(root) == "":
        raise UsageError(f"--dataset {info.name} needs --data-root DIR (the folder holding the dataset's files)")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise UsageError(f"--data-root {path} is not a folder")
    return path


def first_existing(candidates: Iterable[Path], *, kind: str = "any") -> Path | None:
    for c in candidates:
        if (kind == "dir" and c.is_dir()) or (kind == "file" and c.is_file()) or (kind == "any" and c.exists()):
            return c
    return None


def read_lines(path: Path) -> list[str]:
    """The lines of a text file (UTF-8, BOM and CRLF tolerated); CorruptFileError when unreadable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise GencbmError(f"missing file: {path}") from None
    except OSError as exc:
        raise GencbmError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CorruptFileError(f"{path} is not a text file") from None
    return text.splitlines()


def parse_binary(value: str, path: Path, lineno: int) -> int:
    """An attribute value: -1 / 0 -> 0, 1 -> 1 (CelebA writes -1 and 1)."""
    try:
        v = int(value)
    except ValueError:
        raise CorruptFileError(f"{path}, line {lineno}: attribute value {value!r} is not an integer") from None
    return 1 if v > 0 else 0


def parse_attribute_table(path: Path, lines: list[str], header_at: int) -> tuple[list[str], list[str], list[list[int]]]:
    """A CelebA-style table: the header of attribute names on line `header_at` (0-based), then rows
    `FILE v1 v2 ...` separated by any whitespace (the CelebA-HQ split files put two spaces after the
    file name). Returns (attribute names, file names, 0/1 rows)."""
    if len(lines) <= header_at:
        raise CorruptFileError(f"{path}: no header line of attribute names")
    names = lines[header_at].split()
    if not names:
        raise CorruptFileError(f"{path}, line {header_at + 1}: empty header (expected the attribute names)")
    files: list[str] = []
    rows: list[list[int]] = []
    for i in range(header_at + 1, len(lines)):
        parts = lines[i].split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            raise CorruptFileError(
                f"{path}, line {i + 1}: {len(parts) - 1} attribute values for {len(names)} attributes in the header"
            )
        files.append(parts[0])
        rows.append([parse_binary(v, path, i + 1) for v in parts[1:]])
    return names, files, rows


def apply_limit(n: int, limit: int | None) -> int:
    if limit is None:
        return n
    if limit < 1:
        raise UsageError(f"--limit must be at least 1 (got {limit})")
    return min(n, int(limit))
