"""`--dataset toyfaces`: labelled faces rendered on the fly from the built-in toyfaces world.

Fixed splits, the same on every machine:
- train: 20,000 samples; sample i has z = z_for_indices([i], z_dim), i = 0 .. 19,999;
- test: 2,000 samples; sample i has z = z_for_indices([1_000_000 + i], z_dim), so the two splits
  never share a latent (z_for_indices is NVIDIA's seed convention: RandomState(index).randn).
Labels are the world's concepts of z (World().factors(z)), images are render(concepts, nuisances)
at the world's native 32 px. `limit` keeps the first N samples of a split.

Rendering 20k faces takes tens of seconds on a CPU, so a split is rendered once per process in
chunks and cached as uint8 (20k x 3 x 32 x 32 = 61 MB); a larger request extends the cached prefix.
"""

from __future__ import annotations

import threading

import torch

from engine.data.base import ConceptDataset, DatasetInfo, ProgressFn, apply_limit
from engine.errors import UsageError
from engine.toyfaces.renderer import render
from engine.toyfaces.world import CONCEPTS, World, WorldConfig, z_for_indices

TRAIN_SIZE = 20_000  # samples in the train split
TEST_SIZE = 2_000  # samples in the test split
TEST_OFFSET = 1_000_000  # test sample i uses latent index TEST_OFFSET + i
NATIVE_SIZE = 32  # the world's native resolution
CHUNK = 500  # faces rendered per call

INFO = DatasetInfo(
    name="toyfaces", native_size=NATIVE_SIZE, eval_split="test", splits=("train", "test"), needs_root=False,
    default_concepts=CONCEPTS, resize="square",
)

_SPLITS = {"train": (0, TRAIN_SIZE), "test": (TEST_OFFSET, TEST_SIZE)}

# (split, world config) -> (images uint8 [M, 3, 32, 32], concepts int64 [M, 8]) for samples 0 .. M-1
_CACHE: dict[tuple[str, WorldConfig], tuple[torch.Tensor, torch.Tensor]] = {}
_LOCK = threading.Lock()


def split_indices(split: str, n: int) -> list[int]:
    """The latent indices of the first n samples of a split."""
    offset, size = _SPLITS[split]
    return list(range(offset, offset + min(n, size)))


def _quantize(images: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] in [-1, 1] -> uint8
    return ((images.clamp(-1, 1) + 1) * 127.5).round_().to(torch.uint8)


def render_split(split: str, n: int, world: World | None = None, progress: ProgressFn | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 [n, 3, 32, 32], concepts int64 [n, 8]) of the first n samples of a split, cached."""
    if split not in _SPLITS:
        raise UsageError(f"toyfaces has the splits train and test (got {split!r})")
    world = world or World()
    key = (split, world.config)
    n = min(n, _SPLITS[split][1])
    with _LOCK:
        images, labels = _CACHE.get(key, (torch.zeros(0, 3, NATIVE_SIZE, NATIVE_SIZE, dtype=torch.uint8),
                                          torch.zeros(0, len(CONCEPTS), dtype=torch.int64)))
        have = images.shape[0]
        if have < n:
            offset = _SPLITS[split][0]
            new_images, new_labels = [images], [labels]
            label = f"rendering toyfaces {split}"
            with torch.no_grad():
                for start in range(have, n, CHUNK):
                    stop = min(start + CHUNK, n)
                    z = z_for_indices(range(offset + start, offset + stop), world.z_dim)  # [b, z_dim]
                    concepts, nuisances = world.factors(z)  # [b, 8], [b, 12]
                    new_images.append(_quantize(render(concepts, nuisances, NATIVE_SIZE)))
                    new_labels.append(concepts)
                    if progress is not None:
                        progress(label, stop - have, n - have)
            images, labels = torch.cat(new_images), torch.cat(new_labels)
            _CACHE[key] = (images, labels)
    return images[:n], labels[:n]


class ToyFacesDataset(ConceptDataset):
    """A toyfaces split; the whole split lives in memory once prepared."""

    def __init__(self, split: str = "train", concepts: list[str] | None = None, limit: int | None = None,
                 world: World | None = None):
        if split not in _SPLITS:
            raise UsageError(f"toyfaces has the splits train and test (got {split!r})")
        self.info = INFO
        self.split = split
        self.world = world or World()
        self.concepts = list(concepts) if concepts else list(CONCEPTS)
        unknown = [c for c in self.concepts if c not in CONCEPTS]
        if unknown:
            raise UsageError(f"toyfaces has no concept {unknown[0]!r} (valid: {', '.join(CONCEPTS)})")
        self._columns = [CONCEPTS.index(c) for c in self.concepts]
        self.size = apply_limit(_SPLITS[split][1], limit)
        self.image_size = NATIVE_SIZE
        self._images: torch.Tensor | None = None  # [N, 3, 32, 32] uint8, set by prepare()
        self._labels: torch.Tensor | None = None  # [N, K] int64, set by prepare()

    def __len__(self) -> int:
        return self.size

    @property
    def labels(self) -> torch.Tensor:  # [N, K]
        self.prepare()
        assert self._labels is not None
        return self._labels

    def prepare(self, progress: ProgressFn | None = None) -> None:
        if self._images is None:
            images, concepts = render_split(self.split, self.size, self.world, progress)
            self._images = images
            self._labels = concepts[:, self._columns].contiguous()

    def in_memory(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.prepare()
        assert self._images is not None
        return self._images, self.labels

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.prepare()
        assert self._images is not None
        return self._images[index], self.labels[index]
