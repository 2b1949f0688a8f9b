"""`--dataset celeba64`: CelebA (aligned and cropped faces) at 64 x 64.

Layout under --data-root (DIR, DIR/celeba or DIR/CelebA; annotation files also under Anno/ and
Eval/ as in the official release): `img_align_celeba/000001.jpg ...`,
`list_attr_celeba.txt` (line 1: the image count; line 2: the 40 attribute names; then rows
`000001.jpg -1 1 ...`, -1 absent / 1 present) and `list_eval_partition.txt` (`000001.jpg 0`, with
0 train, 1 val, 2 test).

As the original project: its test set was `celeba64_val_annotations.txt`, i.e. the official
validation partition, so train-classifier evaluates celeba64 on split "val"; the original's own
`celeba64_{train,val}_annotations.txt` files (CelebA-HQ split format) are read when the official
files are absent. Images: shorter side resized to 64, then a centre crop of 64 x 64 (the original's
Resize(64) + CenterCrop(64); 512 for ViT-L/16).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from engine.concepts import match_concepts
from engine.data.base import (
    DatasetInfo,
    ImageFileDataset,
    apply_limit,
    first_existing,
    parse_attribute_table,
    read_lines,
    require_root,
)
from engine.data.celebahq import parse_split_file
from engine.errors import CorruptFileError, GencbmError, UsageError

# The eight CelebA concepts of the original project's celeba64 classifier set.
CELEBA64_CONCEPTS = (
    "Attractive", "Wearing_Lipstick", "Mouth_Slightly_Open", "Smiling",
    "High_Cheekbones", "Heavy_Makeup", "Male", "Wavy_Hair",
)

INFO = DatasetInfo(
    name="celeba64", native_size=64, eval_split="val", splits=("train", "val", "test"), needs_root=True,
    default_concepts=CELEBA64_CONCEPTS, resize="crop",
)

PARTITION = {"train": 0, "val": 1, "test": 2}
ORIGINAL_FILES = {"train": "celeba64_train_annotations.txt", "val": "celeba64_val_annotations.txt"}


def _image_dir(base: Path) -> Path | None:
    """base/img_align_celeba, or the nested img_align_celeba/img_align_celeba of some mirrors."""
    folder = base / "img_align_celeba"
    if not folder.is_dir():
        return None
    nested = folder / "img_align_celeba"
    return nested if nested.is_dir() else folder


def find_layout(root: Path) -> tuple[Path, Path | None, Path | None, dict[str, Path]]:
    """(image folder, list_attr_celeba.txt or None, list_eval_partition.txt or None, the original's split files)."""
    if root.name == "img_align_celeba":
        root = root.parent
    bases = [root, root / "celeba", root / "CelebA", root / "datasets"]
    image_dir = None
    for base in bases:
        image_dir = _image_dir(base)
        if image_dir is not None:
            break
    if image_dir is None:
        raise GencbmError(f"no img_align_celeba folder under {root}; --data-root must hold CelebA's img_align_celeba/")
    search = [b for b in bases if b.is_dir()] + [image_dir.parent]
    attr = first_existing([b / sub / "list_attr_celeba.txt" for b in search for sub in ("", "Anno")], kind="file")
    part = first_existing([b / sub / "list_eval_partition.txt" for b in search for sub in ("", "Eval", "Anno")], kind="file")
    originals: dict[str, Path] = {}
    for split, name in ORIGINAL_FILES.items():
        found = first_existing([b / name for b in search], kind="file")
        if found is not None:
            originals[split] = found
    return image_dir, attr, part, originals


@functools.lru_cache(maxsize=4)
def _parse_attr(path: str, mtime_ns: int) -> tuple[tuple[str, ...], tuple[str, ...], torch.Tensor]:
    p = Path(path)
    lines = read_lines(p)
    first = lines[0].split() if lines else []
    header_at = 1 if len(first) == 1 and first[0].isdigit() else 0  # the official file starts with a count
    names, files, rows = parse_attribute_table(p, lines, header_at=header_at)
    if header_at == 1 and int(first[0]) != len(files):
        raise CorruptFileError(f"{p}: line 1 announces {first[0]} images but {len(files)} rows follow")
    return tuple(names), tuple(files), torch.tensor(rows, dtype=torch.int64).reshape(len(rows), len(names))


@functools.lru_cache(maxsize=4)
def _parse_partition(path: str, mtime_ns: int) -> dict[str, int]:
    p = Path(path)
    out: dict[str, int] = {}
    for i, line in enumerate(read_lines(p), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2 or parts[1] not in ("0", "1", "2"):
            raise CorruptFileError(f"{p}, line {i}: expected `FILE 0|1|2` (got {line.strip()!r})")
        out[parts[0]] = int(parts[1])
    return out


def _mtime(path: Path) -> int:
    return os.stat(path).st_mtime_ns


def _table(root: Path, split: str) -> tuple[Path, list[str], list[str], torch.Tensor]:
    """(image folder, attribute names, files, labels [N, 40]) of one split."""
    image_dir, attr, part, originals = find_layout(root)
    if attr is not None and part is not None:
        names, files, labels = _parse_attr(str(attr), _mtime(attr))
        partition = _parse_partition(str(part), _mtime(part))
        want = PARTITION[split]
        keep = [i for i, f in enumerate(files) if partition.get(f) == want]
        if not keep and split != "test":
            raise GencbmError(f"{part} assigns no image of {attr} to the {split} partition")
        return image_dir, list(names), [files[i] for i in keep], labels[keep]
    if split in originals:
        names, files, labels = parse_split_file(originals[split])
        return image_dir, names, files, labels
    missing = "list_attr_celeba.txt" if attr is None else "list_eval_partition.txt"
    raise GencbmError(f"no {missing} under {root} (also looked in Anno/ and Eval/); celeba64 needs CelebA's "
                      "list_attr_celeba.txt and list_eval_partition.txt")


def attribute_names(root: str | os.PathLike | None) -> list[str]:
    return _table(require_root(INFO, root), "train")[1]


def open_celeba64(root: str | os.PathLike | None, split: str = "train", concepts: list[str] | None = None,
                  limit: int | None = None, size: int | None = None) -> ImageFileDataset:
    if split not in INFO.splits:
        raise UsageError(f"celeba64 has the splits {', '.join(INFO.splits)} (got {split!r})")
    image_dir, names, files, labels = _table(require_root(INFO, root), split)
    chosen = match_concepts(concepts or list(INFO.default_concepts), names)
    columns = [names.index(c) for c in chosen]
    n = apply_limit(len(files), limit)
    return ImageFileDataset(INFO, split, [image_dir / f for f in files[:n]], labels[:n, columns].clone(), chosen,
                            size or INFO.native_size)
