"""`--dataset cub` / `cub64`: CUB-200-2011 birds with their 312 binary attributes, at 256 or 64 px.

Layout under --data-root (DIR or DIR/CUB_200_2011):
- `images.txt`: `image_id relative/path.jpg` (ids 1-based), images under `images/`;
- `train_test_split.txt`: `image_id is_training_image` (1 train, 0 test);
- `attributes/image_attribute_labels.txt`: `image_id attribute_id is_present certainty_id time`
  (1-based ids; only the first three fields are read, so the rows of the real file that carry
  extra fields are fine); an attribute without a row for an image counts as absent;
- attribute names `id name` (e.g. `219 has_size::small_(5_-_9_in)`) in `attributes/attributes.txt`,
  `attributes.txt`, or the `attributes.txt` beside the CUB_200_2011 folder, as the archive unpacks.

A concept is chosen by attribute id (`219`), by its CUB name (`has_size::small_(5_-_9_in)`), or, for
the ten attributes of the original project's classifiers, by the name the original gives it
(`Small size 5 to 9 inches`; `--concepts all` trains those ten). Images are resized to S x S
(256 for cub, 64 for cub64, 512 for ViT-L/16).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from engine.concepts import match_concept
from engine.data.base import (
    DatasetInfo,
    ImageFileDataset,
    apply_limit,
    first_existing,
    read_lines,
    require_root,
)
from engine.errors import CorruptFileError, GencbmError, UsageError

# The ten CUB attributes of the original project's classifier sets, as (attribute id, its name there).
ORIGINAL_ATTRIBUTES: tuple[tuple[int, str], ...] = (
    (219, "Small size 5 to 9 inches"),
    (236, "Perching like shape"),
    (55, "Solid breast pattern"),
    (290, "Black bill color"),
    (152, "Bill length shorter than head"),
    (21, "Black wing color"),
    (245, "Solid belly pattern"),
    (7, "All purpose bill shape"),
    (36, "Black upperparts color"),
    (52, "White underparts color"),
)
_ORIGINAL_NAME = dict(ORIGINAL_ATTRIBUTES)
NUM_ATTRIBUTES = 312

INFO = DatasetInfo(
    name="cub", native_size=256, eval_split="test", splits=("train", "test"), needs_root=True,
    default_concepts=tuple(name for _, name in ORIGINAL_ATTRIBUTES), resize="square",
)
INFO64 = DatasetInfo(
    name="cub64", native_size=64, eval_split="test", splits=("train", "test"), needs_root=True,
    default_concepts=INFO.default_concepts, resize="square",
)


def find_layout(root: Path) -> tuple[Path, Path | None]:
    """(the CUB_200_2011 folder, the attribute names file or None)."""
    candidates = [root, root / "CUB_200_2011"]
    base = first_existing([c for c in candidates if (c / "images.txt").is_file()], kind="dir")
    if base is None:
        raise GencbmError(f"no images.txt under {root} or {root / 'CUB_200_2011'}; --data-root must hold CUB_200_2011")
    names = first_existing([base / "attributes" / "attributes.txt", base / "attributes.txt", base.parent / "attributes.txt"],
                           kind="file")
    return base, names


def _mtime(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        raise GencbmError(f"missing file: {path}") from None


def _id_pairs(path: Path, what: str) -> list[tuple[int, str]]:
    """Rows `id value...` as (id, rest of the line)."""
    out = []
    for i, line in enumerate(read_lines(path), start=1):
        parts = line.strip().split(maxsplit=1)
        if not parts:
            continue
        if len(parts) < 2:
            raise CorruptFileError(f"{path}, line {i}: expected `{what}` (got {line.strip()!r})")
        try:
            out.append((int(parts[0]), parts[1].strip()))
        except ValueError:
            raise CorruptFileError(f"{path}, line {i}: {parts[0]!r} is not an id") from None
    return out


@functools.lru_cache(maxsize=4)
def _attribute_names(path: str, mtime_ns: int) -> dict[int, str]:
    return dict(_id_pairs(Path(path), "id name"))


@functools.lru_cache(maxsize=4)
def _images_and_split(base: str, mtime_images: int, mtime_split: int) -> tuple[dict[int, str], dict[int, int]]:
    b = Path(base)
    images = dict(_id_pairs(b / "images.txt", "image_id path"))
    split: dict[int, int] = {}
    for image_id, value in _id_pairs(b / "train_test_split.txt", "image_id is_training_image"):
        flag = value.split()[0]
        if flag not in ("0", "1"):
            raise CorruptFileError(f"{b / 'train_test_split.txt'}: image {image_id} has is_training_image {flag!r} (expected 0 or 1)")
        split[image_id] = int(flag)
    return images, split


@functools.lru_cache(maxsize=4)
def _labels(path: str, mtime_ns: int, attribute_ids: tuple[int, ...]) -> dict[int, list[int]]:
    """{image_id: [0/1 per attribute id]} from image_attribute_labels.txt, only for the ids asked for."""
    p = Path(path)
    wanted = {str(a): k for k, a in enumerate(attribute_ids)}
    out: dict[int, list[int]] = {}
    for i, line in enumerate(read_lines(p), start=1):
        parts = line.split(None, 3)
        if not parts:
            continue
        if len(parts) < 3:
            raise CorruptFileError(f"{p}, line {i}: expected `image_id attribute_id is_present ...` (got {line.strip()!r})")
        k = wanted.get(parts[1])
        if k is None:
            continue
        try:
            image_id, present = int(parts[0]), int(parts[2])
        except ValueError:
            raise CorruptFileError(f"{p}, line {i}: non-integer field in {line.strip()!r}") from None
        row = out.get(image_id)
        if row is None:
            row = out[image_id] = [0] * len(attribute_ids)
        row[k] = 1 if present > 0 else 0
    return out


def concept_choices(names: dict[int, str] | None) -> dict[str, int]:
    """Every spelling a concept may be given in -> attribute id (matched forgivingly)."""
    choices: dict[str, int] = {name: aid for aid, name in ORIGINAL_ATTRIBUTES}
    for aid, name in (names or {}).items():
        choices.setdefault(name, aid)
    ids = names.keys() if names else range(1, NUM_ATTRIBUTES + 1)
    for aid in ids:
        choices.setdefault(str(aid), aid)
    return choices


def display_name(attribute_id: int, names: dict[int, str] | None) -> str:
    """How a concept is named in results and checkpoints: the original's name for its ten, else CUB's."""
    if attribute_id in _ORIGINAL_NAME:
        return _ORIGINAL_NAME[attribute_id]
    if names and attribute_id in names:
        return names[attribute_id]
    return f"attribute {attribute_id}"


def resolve_concepts(concepts: list[str], names: dict[int, str] | None) -> list[int]:
    choices = concept_choices(names)
    valid = [n for n in choices if not n.isdigit()] or list(choices)
    ids: list[int] = []
    for c in concepts:
        text = str(c).strip()
        if text.isdigit():
            aid = int(text)
            if aid not in choices.values():
                raise UsageError(f"CUB has no attribute id {aid} (ids are 1 .. {max(choices.values())})")
        else:
            aid = choices[match_concept(text, valid, what="CUB attribute")]
        if aid not in ids:
            ids.append(aid)
    return ids


def attribute_names(root: str | os.PathLike | None) -> list[str]:
    """Names a concept can be given by (the original's ten first, then CUB's own names)."""
    _, names_file = find_layout(require_root(INFO, root))
    names = _attribute_names(str(names_file), _mtime(names_file)) if names_file else None
    return [n for n in concept_choices(names) if not n.isdigit()]


def open_cub(root: str | os.PathLike | None, split: str = "train", concepts: list[str] | None = None,
             limit: int | None = None, size: int | None = None, info: DatasetInfo = INFO) -> ImageFileDataset:
    if split not in info.splits:
        raise UsageError(f"{info.name} has the splits {', '.join(info.splits)} (got {split!r})")
    base, names_file = find_layout(require_root(info, root))
    names = _attribute_names(str(names_file), _mtime(names_file)) if names_file else None
    ids = resolve_concepts(list(concepts or info.default_concepts), names)
    images, is_train = _images_and_split(str(base), _mtime(base / "images.txt"), _mtime(base / "train_test_split.txt"))
    labels_file = base / "attributes" / "image_attribute_labels.txt"
    table = _labels(str(labels_file), _mtime(labels_file), tuple(ids))
    want = 1 if split == "train" else 0
    keep = sorted(i for i, flag in is_train.items() if flag == want)
    missing = [i for i in keep if i not in images]
    if missing:
        raise CorruptFileError(f"{base / 'train_test_split.txt'} lists image {missing[0]}, which images.txt does not have")
    n = apply_limit(len(keep), limit)
    keep = keep[:n]
    zeros = [0] * len(ids)
    labels = torch.tensor([table.get(i, zeros) for i in keep], dtype=torch.int64).reshape(len(keep), len(ids))
    files = [base / "images" / images[i] for i in keep]
    return ImageFileDataset(info, split, files, labels, [display_name(a, names) for a in ids], size or info.native_size)


def open_cub64(root: str | os.PathLike | None, split: str = "train", concepts: list[str] | None = None,
               limit: int | None = None, size: int | None = None) -> ImageFileDataset:
    return open_cub(root, split, concepts, limit, size, info=INFO64)
