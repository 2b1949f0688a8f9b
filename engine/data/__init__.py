"""Concept-labelled image datasets for training concept classifiers.

    ds = open_dataset("toyfaces", split="train", concepts=["Smiling"], limit=4000)
    ds.prepare()                      # slow one-time work (rendering, file checks)
    image, labels = ds[0]             # uint8 [3, S, S], int64 [K]

Datasets: toyfaces (built in), celebahq (CelebAMask-HQ, 256 px), celeba64 (CelebA, 64 px),
cub (CUB-200-2011, 256 px), cub64 (64 px). See each module for the files it reads.
"""

from __future__ import annotations

import os
from typing import Callable

from engine.data.base import ConceptDataset, DatasetInfo, ImageReadError, to_unit_range
from engine.errors import UsageError

__all__ = [
    "DATASETS", "ConceptDataset", "DatasetInfo", "ImageReadError", "dataset_info", "open_dataset",
    "dataset_concepts", "to_unit_range",
]

DATASETS = ("toyfaces", "celebahq", "celeba64", "cub", "cub64")


def dataset_info(name: str) -> DatasetInfo:
    """Static facts of a dataset (no files read)."""
    from engine.concepts import match_concept

    key = match_concept(name, DATASETS, what="dataset")
    if key == "toyfaces":
        from engine.data.toyfaces import INFO
    elif key == "celebahq":
        from engine.data.celebahq import INFO
    elif key == "celeba64":
        from engine.data.celeba64 import INFO
    elif key == "cub":
        from engine.data.cub import INFO
    else:
        from engine.data.cub import INFO64 as INFO
    return INFO


def _opener(name: str) -> Callable[..., ConceptDataset]:
    if name == "toyfaces":
        from engine.data.toyfaces import ToyFacesDataset

        def open_toy(root, split, concepts, limit, size):
            from engine.concepts import match_concepts
            from engine.toyfaces.world import CONCEPTS

            chosen = match_concepts(concepts, CONCEPTS) if concepts else None
            return ToyFacesDataset(split, chosen, limit)

        return open_toy
    if name == "celebahq":
        from engine.data.celebahq import open_celebahq

        return open_celebahq
    if name == "celeba64":
        from engine.data.celeba64 import open_celeba64

        return open_celeba64
    if name == "cub":
        from engine.data.cub import open_cub

        return open_cub
    from engine.data.cub import open_cub64

    return open_cub64


def open_dataset(
    name: str,  # toyfaces, celebahq, celeba64, cub or cub64
    *,
    root: str | os.PathLike | None = None,  # the dataset's folder (not used by toyfaces)
    split: str = "train",  # train, test (celeba64 also val)
    concepts: list[str] | None = None,  # concept names (matched forgivingly); None: the dataset's concept set
    limit: int | None = None,  # keep only the first N samples of the split
    size: int | None = None,  # image size S; None: the dataset's native size (toyfaces: always 32)
) -> ConceptDataset:
    info = dataset_info(name)
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be at least 1 (got {limit})")
    return _opener(info.name)(root, split, list(concepts) if concepts else None, limit, size)


def dataset_concepts(name: str, root: str | os.PathLike | None = None) -> list[str]:
    """The concept names a dataset offers (for CUB: the original's ten names, then CUB's 312)."""
    info = dataset_info(name)
    if info.name == "toyfaces":
        from engine.toyfaces.world import CONCEPTS

        return list(CONCEPTS)
    if info.name == "celebahq":
        from engine.data.celebahq import attribute_names

        return attribute_names(root)
    if info.name == "celeba64":
        from engine.data.celeba64 import attribute_names

        return attribute_names(root)
    from engine.data.cub import attribute_names

    return attribute_names(root)
