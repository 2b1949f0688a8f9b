"""`--dataset celebahq`: CelebAMask-HQ images with the original project's train/test split files.

Layout under --data-root (any of DIR, DIR/CelebAMask-HQ, DIR/datasets/CelebAMask-HQ, the last as the
original's --base-root): `CelebA-HQ-img/N.jpg` and the split files `train.txt`, `test.txt`. When the
split files are not there, the store's `celebahq-splits` artifact is used
(`gencbm download celebahq-splits`).

Split file format: a header line of the 40 CelebA attribute names, then one row per image,
`NNNN.jpg  -1 1 ...` (two spaces after the file name in the published files; any whitespace is
accepted); -1 means absent (label 0), 1 present (label 1).
Images: resized to S x S (S = 256, 512 for ViT-L/16), as the original's Resize((S, S)).
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
from engine.errors import ArtifactMissingError, GencbmError, UsageError

# The eight CelebA-HQ concepts of the original project's classifier set and CB-AE.
CELEBAHQ_CONCEPTS = (
    "Attractive", "Wearing_Lipstick", "Mouth_Slightly_Open", "Smiling",
    "High_Cheekbones", "Heavy_Makeup", "Male", "Arched_Eyebrows",
)

INFO = DatasetInfo(
    name="celebahq", native_size=256, eval_split="test", splits=("train", "test"), needs_root=True,
    default_concepts=CELEBAHQ_CONCEPTS, resize="square",
)

IMAGE_DIR = "CelebA-HQ-img"
SPLITS_ARTIFACT = "celebahq-splits"


def find_layout(root: Path) -> tuple[Path, Path, dict[str, Path]]:
    """(base folder, image folder, {split: split file}) under a data root."""
    if root.name == IMAGE_DIR:
        root = root.parent
    candidates = [root, root / "CelebAMask-HQ", root / "datasets" / "CelebAMask-HQ"]
    base = first_existing([c for c in candidates if (c / IMAGE_DIR).is_dir()], kind="dir")
    if base is None:
        raise GencbmError(
            f"no {IMAGE_DIR} folder under {root} (looked in {', '.join(str(c) for c in candidates)}); "
            "--data-root must hold CelebAMask-HQ"
        )
    splits: dict[str, Path] = {}
    for split in INFO.splits:
        local = base / f"{split}.txt"
        if local.is_file():
            splits[split] = local
    if len(splits) < len(INFO.splits):
        stored = _stored_splits(base)
        for split in INFO.splits:
            splits.setdefault(split, stored / f"{split}.txt")
    return base, base / IMAGE_DIR, splits


def _stored_splits(base: Path) -> Path:
    from engine.store.artifacts import resolve_artifact

    try:
        folder = resolve_artifact(SPLITS_ARTIFACT)
    except ArtifactMissingError:
        raise ArtifactMissingError(
            f"no train.txt/test.txt in {base} and the split files are not in the store; "
            f"fetch them with `gencbm download {SPLITS_ARTIFACT}` (or put the original project's "
            f"datasets/CelebAMask-HQ/train.txt and test.txt there)"
        ) from None
    for sub in (folder / "CelebAMask-HQ", folder):
        if (sub / "train.txt").is_file():
            return sub
    raise ArtifactMissingError(f"stored {SPLITS_ARTIFACT} has no train.txt; fetch it again with `gencbm download {SPLITS_ARTIFACT} --force`")


@functools.lru_cache(maxsize=8)
def _parse(path: str, mtime_ns: int) -> tuple[tuple[str, ...], tuple[str, ...], torch.Tensor]:
    p = Path(path)
    names, files, rows = parse_attribute_table(p, read_lines(p), header_at=0)
    return tuple(names), tuple(files), torch.tensor(rows, dtype=torch.int64).reshape(len(rows), len(names))


def parse_split_file(path: Path) -> tuple[list[str], list[str], torch.Tensor]:
    """(attribute names, image file names, labels [N, 40] in {0, 1}) of a split file; cached per process."""
    try:
        mtime = os.stat(path).st_mtime_ns
    except FileNotFoundError:
        raise GencbmError(f"missing split file: {path}") from None
    names, files, labels = _parse(str(path), mtime)
    return list(names), list(files), labels


def attribute_names(root: str | os.PathLike | None) -> list[str]:
    """The attribute names in the train split file's header."""
    _, _, splits = find_layout(require_root(INFO, root))
    return parse_split_file(splits["train"])[0]


def open_celebahq(root: str | os.PathLike | None, split: str = "train", concepts: list[str] | None = None,
                  limit: int | None = None, size: int | None = None, info: DatasetInfo = INFO) -> ImageFileDataset:
    if split not in info.splits:
        raise UsageError(f"{info.name} has the splits {', '.join(info.splits)} (got {split!r})")
    _, image_dir, splits = find_layout(require_root(info, root))
    names, files, labels = parse_split_file(splits[split])
    chosen = match_concepts(concepts or list(info.default_concepts), names)
    columns = [names.index(c) for c in chosen]
    n = apply_limit(len(files), limit)
    return ImageFileDataset(info, split, [image_dir / f for f in files[:n]], labels[:n, columns].clone(), chosen,
                            size or info.native_size)
