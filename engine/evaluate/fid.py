"""Fréchet Inception Distance (FID) of generated images, plain or through a concept bottleneck.

    net = load_fid_inception("cuda")                      # pytorch-fid's Inception weights, from the store
    real = real_stats("data/celebahq-png", inception=net)  # cached in GENCBM_HOME/fid-stats
    result = evaluate_fid(FidConfig(gen="stylegan2-celebahq-256", real="data/celebahq-png"))

Standard: pytorch-fid (mseitzer/pytorch-fid), i.e. the numbers of `python -m pytorch_fid real/ fake/`:
- network: Inception-v3 with pytorch-fid's weights `pt_inception-2015-12-05-6726825d.pth` (the
  TensorFlow FID graph of Heusel et al. ported to PyTorch; registry artifact `inception-fid`) and its
  FID-specific blocks: every average pool inside the mixed blocks ignores the zero padding
  (TensorFlow's behaviour, count_include_pad=False), and the pool branch of the last block
  (Mixed_7c) takes a 3x3 max pool instead of an average. Features are the 2048-d pool3 activations
  (global average pool after Mixed_7c); the 1008-class fc is part of the weights but unused.
- preprocessing: gencbm images in [-1, 1] -> [0, 1] -> F.interpolate(size=(299, 299),
  mode="bilinear", align_corners=False) -> 2x - 1, in that order, as pytorch-fid does.
- generated images are first rounded to 8 bits exactly as `gencbm generate` writes PNGs
  ((x * 127.5 + 128).clamp(0, 255), truncated), so streaming them gives the FID pytorch-fid would
  compute on the saved PNGs; real images are read with PIL and converted to RGB, as pytorch-fid does.
- statistics: mean and unbiased covariance (numpy.cov(rowvar=False)); distance
  |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2)). pytorch-fid takes the matrix square root
  with scipy.linalg.sqrtm; here tr(sqrt(S1 S2)) comes from the eigenvalues of the symmetric
  matrix sqrt(S1) S2 sqrt(S1) (same spectrum as S1 S2), which needs no scipy and agrees to
  rounding error.
Differences from pytorch-fid's command line: folders are read recursively with case-insensitive
extensions (png, jpg, jpeg, webp); images of different sizes may share a folder.

Other FID implementations give different numbers for the same images: clean-fid resizes with PIL's
(antialiased) bicubic filter instead of bilinear interpolation without antialiasing, and
torch-fidelity / StyleGAN's metrics use a TensorFlow-style resize. Compare only FIDs computed the
same way, with the same number of samples (FID is biased upward for small sample counts; 10,000+
generated images is the usual minimum, 50,000 the usual report).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.errors import ArtifactMissingError, CorruptFileError, GencbmError, UsageError
from engine.generators.ddpm import Sampling

STANDARD = "pytorch-fid"  # what the numbers of FIDInceptionV3 match
INCEPTION_ARTIFACT = "inception-fid"  # registry name of pt_inception-2015-12-05-6726825d.pth
FEATURE_DIM = 2048  # pool3 features
INPUT_SIZE = 299  # Inception-v3's input resolution
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
KINDS = ("base", "recon", "edit")
STATS_VERSION = "gencbm-fid-stats-1"  # part of every cache key: bump when the pipeline changes

ProgressFn = Callable[[int, int], None]  # (done, total)

__all__ = [
    "STANDARD", "FIDInceptionV3", "load_fid_inception", "frechet_distance", "FeatureStats", "RealStats", "real_stats",
    "list_images", "generated_batches", "FidConfig", "evaluate_fid",
]


# ------------------------------------------------------------------------------------------------
# The FID Inception-v3. Module names and shapes follow torchvision's Inception3 (num_classes=1008,
# aux_logits=False), whose state dict pytorch-fid's weight file is.


class _ConvBN(nn.Module):
    """conv (no bias) -> batch norm (eps 1e-3, TensorFlow's) -> ReLU; torchvision's BasicConv2d layout."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, C, H, W]
    """3x3 stride-1 average pool that, like TensorFlow's, averages only over real (unpadded) pixels."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max_pool_same(x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, C, H, W]
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class _MixedA(nn.Module):
    """Mixed_5b/5c/5d (35x35): 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | TF avg pool -> 1x1."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = _ConvBN(cin, 64, 1)
        self.branch5x5_1 = _ConvBN(cin, 48, 1)
        self.branch5x5_2 = _ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, padding=1)
        self.branch_pool = _ConvBN(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, cin, H, W] -> [B, 224 + pool_features, H, W]
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([a, b, c, d], dim=1)


class _ReductionB(nn.Module):
    """Mixed_6a (35 -> 17): stride-2 3x3 | 1x1 -> 3x3 -> stride-2 3x3 | stride-2 max pool."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = _ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, cin, H, W] -> [B, 480 + cin, H', W']
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        c = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([a, b, c], dim=1)


class _MixedC(nn.Module):
    """Mixed_6b..6e (17x17): 1x1 | factorised 7x7 | doubly factorised 7x7 | TF avg pool -> 1x1."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = _ConvBN(cin, 192, 1)
        self.branch7x7_1 = _ConvBN(cin, c7, 1)
        self.branch7x7_2 = _ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = _ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 768, H, W] -> [B, 768, H, W]
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            c = layer(c)
        d = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([a, b, c, d], dim=1)


class _ReductionD(nn.Module):
    """Mixed_7a (17 -> 8): 1x1 -> stride-2 3x3 | 1x1 -> 1x7 -> 7x1 -> stride-2 3x3 | stride-2 max pool."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = _ConvBN(cin, 192, 1)
        self.branch3x3_2 = _ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = _ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 768, 17, 17] -> [B, 1280, 8, 8]
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        c = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([a, b, c], dim=1)


class _MixedE(nn.Module):
    """Mixed_7b/7c (8x8): 1x1 | 1x1 -> (1x3, 3x1) | 1x1 -> 3x3 -> (1x3, 3x1) | pool -> 1x1.

    pool "avg": TF average pool (Mixed_7b); "max": 3x3 max pool (Mixed_7c in the FID graph)."""

    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = _ConvBN(cin, 320, 1)
        self.branch3x3_1 = _ConvBN(cin, 384, 1)
        self.branch3x3_2a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = _ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, cin, 8, 8] -> [B, 2048, 8, 8]
        a = self.branch1x1(x)
        t = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(t), self.branch3x3_2b(t)], dim=1)  # [B, 768, 8, 8]
        u = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat([self.branch3x3dbl_3a(u), self.branch3x3dbl_3b(u)], dim=1)  # [B, 768, 8, 8]
        pooled = _max_pool_same(x) if self.pool == "max" else _tf_avg_pool(x)
        d = self.branch_pool(pooled)
        return torch.cat([a, b, c, d], dim=1)


class FIDInceptionV3(nn.Module):
    """The Inception-v3 of FID (pytorch-fid's): images [B, 3, H, W] in [-1, 1] -> pool3 features [B, 2048].

    Any H, W: images are resized to 299x299 (bilinear, as pytorch-fid). Weights are random until
    loaded (see load_fid_inception); the state dict matches pt_inception-2015-12-05-6726825d.pth.
    """

    standard = STANDARD  # which published numbers this network's FIDs are comparable with

    def __init__(self):
        super().__init__()
        self.identity: str | None = None  # what the weights are (set by load_fid_inception; keys the stats cache)
        self.Conv2d_1a_3x3 = _ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = _ConvBN(80, 192, 3)
        self.Mixed_5b = _MixedA(192, 32)
        self.Mixed_5c = _MixedA(256, 64)
        self.Mixed_5d = _MixedA(288, 64)
        self.Mixed_6a = _ReductionB(288)
        self.Mixed_6b = _MixedC(768, 128)
        self.Mixed_6c = _MixedC(768, 160)
        self.Mixed_6d = _MixedC(768, 160)
        self.Mixed_6e = _MixedC(768, 192)
        self.Mixed_7a = _ReductionD(768)
        self.Mixed_7b = _MixedE(1280, pool="avg")
        self.Mixed_7c = _MixedE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, 1008)  # the graph's 1008-way logits; in the weight file, unused for FID

    @staticmethod
    def preprocess(x: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] in [-1, 1] -> [B, 3, 299, 299] in [-1, 1]
        """pytorch-fid's order: to [0, 1], bilinear resize (no antialias, align_corners=False), back to [-1, 1]."""
        x = (x.to(torch.float32) + 1.0) / 2.0
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return 2.0 * x - 1.0

    def trunk(self, x: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] prepared input -> [B, 2048]
        x = self.Conv2d_1a_3x3(x)  # [B, 32, 149, 149] at 299 px
        x = self.Conv2d_2a_3x3(x)  # [B, 32, 147, 147]
        x = self.Conv2d_2b_3x3(x)  # [B, 64, 147, 147]
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # [B, 64, 73, 73]
        x = self.Conv2d_3b_1x1(x)  # [B, 80, 73, 73]
        x = self.Conv2d_4a_3x3(x)  # [B, 192, 71, 71]
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # [B, 192, 35, 35]
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d):
            x = block(x)  # [B, 256 | 288 | 288, 35, 35]
        x = self.Mixed_6a(x)  # [B, 768, 17, 17]
        for block in (self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e):
            x = block(x)  # [B, 768, 17, 17]
        x = self.Mixed_7a(x)  # [B, 1280, 8, 8]
        x = self.Mixed_7b(x)  # [B, 2048, 8, 8]
        x = self.Mixed_7c(x)  # [B, 2048, 8, 8]
        return x.mean(dim=(2, 3))  # [B, 2048]: pool3

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] in [-1, 1] -> [B, 2048]
        return self.trunk(self.preprocess(x))


def _file_sha256(path: Path) -> str:
    try:
        from engine.store.manifest import cached_sha256

        return cached_sha256(path)
    except Exception:  # noqa: BLE001  (a read-only store: hash without the cache)
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()


def load_fid_inception(device: str | torch.device = "cpu", path: str | os.PathLike | None = None) -> FIDInceptionV3:
    """FIDInceptionV3 with pytorch-fid's weights, in eval mode and frozen, on `device`.

    path None: the stored artifact `inception-fid` (ArtifactMissingError naming `gencbm download
    inception-fid` when absent). A file that is not exactly that state dict: CorruptFileError naming it.
    """
    if path is None:
        from engine.store.artifacts import resolve_artifact

        file = Path(resolve_artifact(INCEPTION_ARTIFACT))
    else:
        file = Path(path).expanduser()
        if not file.is_file():
            raise ArtifactMissingError(f"no such file: {file} (the FID Inception weights; `gencbm download {INCEPTION_ARTIFACT}` fetches them)")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (unpickling, zip and I/O errors alike mean an unusable file)
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorruptFileError(f"{file} is not a readable PyTorch state dict ({detail[:200]})") from None
    net = FIDInceptionV3()
    _check_state(net, state, file)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CorruptFileError(f"{file} does not fit the FID Inception-v3: {str(exc).splitlines()[0][:200]}") from None
    net.identity = f"pytorch-fid-inception:{_file_sha256(file)}"
    net.requires_grad_(False)
    return net.eval().to(device)


def _check_state(net: nn.Module, state: Any, file: Path) -> None:
    """CorruptFileError (one line) unless `state` has exactly the network's tensors and shapes."""
    what = "is not pytorch-fid's Inception weights (pt_inception-2015-12-05)"
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CorruptFileError(f"{file} {what}: not a state dict of tensors")
    own = net.state_dict()
    optional = {k for k in own if k.endswith("num_batches_tracked")}  # absent in files saved by old PyTorch
    missing = [k for k in own if k not in state and k not in optional]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise CorruptFileError(f"{file} {what}: {len(missing)} missing and {len(unexpected)} unexpected tensors (e.g. {first})")
    if wrong:
        k = wrong[0]
        raise CorruptFileError(f"{file} {what}: {k} has shape {list(state[k].shape)}, {list(own[k].shape)} expected")


# ------------------------------------------------------------------------------------------------
# The distance.


def _as_f64(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _sqrt_psd(s: np.ndarray) -> np.ndarray:  # [D, D] symmetric PSD -> its symmetric square root [D, D]
    vals, vecs = np.linalg.eigh(s)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr(sqrtm(s1 @ s2)) for symmetric PSD s1, s2.

    s1 s2 is similar to r s2 r with r = sqrt(s1) (symmetric PSD), so its eigenvalues are real and
    non-negative and the trace of its principal square root is the sum of their square roots.
    Rounding leaves tiny negative eigenvalues for (near-)singular covariances; they are zeros.
    """
    r = _sqrt_psd(s1)
    m = r @ s2 @ r  # [D, D]
    m = (m + m.T) / 2.0
    vals = np.linalg.eigvalsh(m)
    return float(np.sqrt(np.clip(vals, 0.0, None)).sum())


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, eps: float = 1e-6) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    mu [D], sigma [D, D] (numpy arrays or tensors). Should an eigendecomposition not converge, eps * I
    is added to both covariances and it is tried again (pytorch-fid's remedy for a singular product).
    """
    m1, m2 = np.atleast_1d(_as_f64(mu1)), np.atleast_1d(_as_f64(mu2))
    s1, s2 = np.atleast_2d(_as_f64(sigma1)), np.atleast_2d(_as_f64(sigma2))
    d = m1.shape[0]
    if m1.shape != (d,) or m2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise GencbmError(f"FID statistics do not match: means {list(m1.shape)} and {list(m2.shape)}, "
                          f"covariances {list(s1.shape)} and {list(s2.shape)}")
    if not all(np.isfinite(a).all() for a in (m1, m2, s1, s2)):
        raise GencbmError("FID statistics contain NaN or infinity (the feature network produced non-finite values)")
    s1, s2 = (s1 + s1.T) / 2.0, (s2 + s2.T) / 2.0
    try:
        tr_covmean = _trace_sqrt_product(s1, s2)
    except np.linalg.LinAlgError:
        offset = np.eye(d) * eps
        tr_covmean = _trace_sqrt_product(s1 + offset, s2 + offset)
    diff = m1 - m2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return max(value, 0.0)  # a squared distance; rounding can leave -1e-12 for identical statistics


# ------------------------------------------------------------------------------------------------
# Streaming statistics.


class FeatureStats:
    """Running mean and covariance of features [N, D] in float64, in O(D^2) memory whatever N.

    Sums are taken about a shift (the first batch's mean) so the covariance keeps its precision
    when the features' mean is large against their spread. Saved as .npz with mu, sigma (the keys
    of pytorch-fid's precomputed statistics, which from_npz also reads) and n.
    """

    def __init__(self) -> None:
        self.n = 0  # features seen
        self._shift: torch.Tensor | None = None  # [D] float64
        self._sum: torch.Tensor | None = None  # [D] sum of (x - shift)
        self._outer: torch.Tensor | None = None  # [D, D] sum of (x - shift)(x - shift)^T
        self._fixed: tuple[np.ndarray, np.ndarray] | None = None  # (mu, sigma) of statistics read from a file

    @property
    def dim(self) -> int | None:
        if self._fixed is not None:
            return int(self._fixed[0].shape[0])
        return None if self._shift is None else int(self._shift.shape[0])

    def update(self, feats: torch.Tensor) -> None:  # feats [B, D]
        if self._fixed is not None:
            raise GencbmError("statistics read from a file cannot take more features")
        if feats.ndim != 2:
            raise GencbmError(f"features must be [B, D] (got {list(feats.shape)})")
        if feats.shape[0] == 0:
            return
        f = feats.detach().to(torch.float64)  # [B, D]
        if not bool(torch.isfinite(f).all()):
            raise GencbmError("the feature network produced NaN or infinite features")
        if self._shift is None:
            self._shift = f.mean(dim=0)
            self._sum = torch.zeros_like(self._shift)
            self._outer = torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64, device=f.device)
        if f.shape[1] != self._shift.shape[0]:
            raise GencbmError(f"features of dimension {f.shape[1]} after {self._shift.shape[0]}")
        c = f.to(self._shift.device) - self._shift  # [B, D]
        self._sum += c.sum(dim=0)
        self._outer.addmm_(c.T, c)
        self.n += int(f.shape[0])

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        """Add another accumulator's features (e.g. another rank's) to this one, re-centred on this
        one's shift: the result is what one accumulator fed every feature would hold, to rounding."""
        if self._fixed is not None or other._fixed is not None:
            raise GencbmError("statistics read from a file cannot be merged")
        if other.n == 0:
            return self
        if self.n == 0:
            self.n, self._shift, self._sum, self._outer = other.n, other._shift.clone(), other._sum.clone(), other._outer.clone()
            return self
        d = (other._shift - self._shift).to(self._shift.device)  # [D]
        s_o = other._sum.to(self._shift.device)
        self._sum += s_o + other.n * d
        self._outer += other._outer.to(self._shift.device) + torch.outer(d, s_o) + torch.outer(s_o, d) + other.n * torch.outer(d, d)
        self.n += other.n
        return self

    def state(self) -> dict[str, Any]:
        """The accumulator's sums on the CPU (for gathering across ranks)."""
        cpu = lambda t: None if t is None else t.cpu()  # noqa: E731
        return {"n": self.n, "shift": cpu(self._shift), "sum": cpu(self._sum), "outer": cpu(self._outer)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "FeatureStats":
        out = cls()
        out.n, out._shift, out._sum, out._outer = int(state["n"]), state["shift"], state["sum"], state["outer"]
        return out

    def mean(self) -> np.ndarray:  # [D] float64
        if self._fixed is not None:
            return self._fixed[0].copy()
        if self.n < 1:
            raise GencbmError("no features were accumulated")
        return (self._shift + self._sum / self.n).cpu().numpy()

    def cov(self) -> np.ndarray:  # [D, D] float64, unbiased (numpy.cov(x, rowvar=False))
        if self._fixed is not None:
            return self._fixed[1].copy()
        if self.n < 2:
            raise GencbmError(f"a covariance needs at least 2 images (got {self.n})")
        s = self._sum
        c = (self._outer - torch.outer(s, s) / self.n) / (self.n - 1)
        return ((c + c.T) / 2.0).cpu().numpy()

    def to_npz(self, path: str | os.PathLike) -> Path:
        """Write mu, sigma, n atomically (a reader never sees a half-written file)."""
        from engine.store.atomic import atomic_path

        mu, sigma = self.mean(), self.cov()
        path = Path(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
                np.savez(f, mu=mu, sigma=sigma, n=np.int64(self.n))
                f.flush()
                os.fsync(f.fileno())
        return path

    @classmethod
    def from_npz(cls, path: str | os.PathLike) -> "FeatureStats":
        """Statistics saved by to_npz (or pytorch-fid's mu/sigma files; n is then 0, unknown)."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                if "mu" not in data.files or "sigma" not in data.files:
                    raise CorruptFileError(f"{path} holds no FID statistics (no mu and sigma arrays)")
                mu = np.asarray(data["mu"], dtype=np.float64)
                sigma = np.asarray(data["sigma"], dtype=np.float64)
                n = int(data["n"]) if "n" in data.files else 0
        except CorruptFileError:
            raise
        except FileNotFoundError:
            raise ArtifactMissingError(f"no such file: {path}") from None
        except Exception as exc:  # noqa: BLE001  (zip, format and I/O errors alike)
            raise CorruptFileError(f"{path} is not a readable .npz file of FID statistics ({type(exc).__name__})") from None
        d = mu.shape[0] if mu.ndim == 1 else -1
        if d < 1 or sigma.shape != (d, d) or not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
            raise CorruptFileError(f"{path}: FID statistics with mu {list(mu.shape)} and sigma {list(sigma.shape)} (expected [D] and [D, D], finite)")
        out = cls()
        out._fixed = (mu, sigma)
        out.n = n
        return out


# ------------------------------------------------------------------------------------------------
# Feature extraction.


def _net_device(net: nn.Module, fallback: torch.device) -> torch.device:
    for t in net.parameters():
        return t.device
    for t in net.buffers():
        return t.device
    return fallback


def _features(net: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images [B, C, H, W] -> features [B, D] of `net` (which takes [-1, 1] images)."""
    from engine.data.base import to_unit_range

    if images.shape[1] == 1:  # grayscale: the RGB conversion PIL would make
        images = images.expand(-1, 3, -1, -1)
    x = to_unit_range(images.to(device))  # [B, 3, H, W] in [-1, 1]
    with torch.no_grad():
        out = net(x)
    if out.ndim == 4:  # feature maps: global average pool, as pytorch-fid does for its other blocks
        out = out.mean(dim=(2, 3))
    if out.ndim != 2 or out.shape[0] != images.shape[0]:
        raise GencbmError(f"the feature network must give [B, D] features (got {list(out.shape)} for {images.shape[0]} images)")
    return out


def _net_identity(net: nn.Module) -> str:
    """What the network computes, for cache keys: its declared identity or a digest of its tensors."""
    ident = getattr(net, "identity", None)
    if ident:
        return str(ident)
    h = hashlib.sha256(type(net).__qualname__.encode())
    for name, t in sorted(net.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"{type(net).__qualname__}:{h.hexdigest()}"


# ------------------------------------------------------------------------------------------------
# Real images.


@dataclass(frozen=True)
class RealStats:
    stats: FeatureStats  # mu, sigma of the real images' features
    source: str  # the folder (absolute), the .npz file, or "dataset NAME (split S)"
    images: int  # how many images the statistics cover (0: unknown, a pytorch-fid .npz)
    cached: bool  # read from the stats cache (no feature extraction)
    cache_file: str | None  # where they are cached; None: not cached

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "images": self.images, "cached": self.cached}


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files (png, jpg, jpeg, webp; any case) under `folder`, recursively, sorted by relative path."""
    root = Path(folder)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                found.append(Path(dirpath) / name)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _read_rgb(path: Path) -> torch.Tensor:  # -> uint8 [3, H, W] at the file's own size
    from PIL import Image, UnidentifiedImageError

    from engine.data.base import ImageReadError

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise ImageReadError(f"missing image: {path}") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageReadError(f"cannot read image {path}: {detail}") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def _prefetched(items: Iterable[Any], load: Callable[[Any], torch.Tensor], workers: int = 4, depth: int = 64) -> Iterator[torch.Tensor]:
    """load(item) for each item in order, decoded by a few threads ahead of the consumer."""
    from concurrent.futures import ThreadPoolExecutor

    workers = max(1, min(workers, os.cpu_count() or 1))
    it = iter(items)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        window: deque = deque(pool.submit(load, item) for _, item in zip(range(depth), it))
        try:
            while window:
                image = window.popleft().result()
                nxt = next(it, _END)
                if nxt is not _END:
                    window.append(pool.submit(load, nxt))
                yield image
        finally:
            for fut in window:
                fut.cancel()


_END = object()


def _same_size_batches(images: Iterable[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    """uint8 [3, H, W] images -> batches [B, 3, H, W] of at most batch_size; a size change starts a batch."""
    batch: list[torch.Tensor] = []
    for img in images:
        if batch and (len(batch) == batch_size or img.shape != batch[0].shape):
            yield torch.stack(batch)
            batch = []
        batch.append(img)
    if batch:
        yield torch.stack(batch)


def _accumulate(batches: Iterable[torch.Tensor], net: nn.Module, device: torch.device, total: int,
                progress: ProgressFn | None) -> FeatureStats:
    stats = FeatureStats()
    done = 0
    for batch in batches:
        stats.update(_features(net, batch, device))
        done += int(batch.shape[0])
        if progress is not None:
            progress(done, total)
    return stats


def _cache_path(doc: dict[str, Any]) -> Path:
    from engine.store.paths import home

    key = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:40]
    return home() / "fid-stats" / f"{key}.npz"


def _cached(path: Path | None) -> FeatureStats | None:
    if path is None or not path.is_file():
        return None
    try:
        return FeatureStats.from_npz(path)
    except GencbmError:  # a damaged cache entry is recomputed (and replaced)
        return None


def _files_fingerprint(files: list[Path], root: Path | None) -> list[list[Any]]:
    out = []
    for f in files:
        try:
            st = f.stat()
        except FileNotFoundError:
            from engine.data.base import ImageReadError

            raise ImageReadError(f"missing image: {f}") from None
        name = f.relative_to(root).as_posix() if root is not None else str(f.resolve())
        out.append([name, st.st_size, st.st_mtime_ns])
    return out


def real_stats(
    folder: str | os.PathLike | None = None,  # a folder of images (read recursively)
    *,
    dataset: str | None = None,  # or a gencbm dataset (toyfaces, celebahq, ...), read at its native size
    data_root: str | os.PathLike | None = None,  # the dataset's folder (not for toyfaces)
    split: str = "train",  # the dataset's split
    limit: int | None = None,  # the first N images (sorted files / dataset order); None: all
    inception: nn.Module | None = None,  # feature network ([-1, 1] images -> [B, D]); None: FID Inception from the store
    device: str | torch.device = "auto",  # where a loaded Inception runs (an injected one stays where it is)
    batch_size: int = 32,
    progress: ProgressFn | None = None,  # (images done, images to extract); not called on a cache hit
    cache: bool = True,  # read and write GENCBM_HOME/fid-stats
) -> RealStats:
    """Feature statistics of real images, cached in the store per source and feature network.

    The cache key covers the absolute folder, the name, size and mtime of every image used, the
    limit and the network's identity, so a changed folder is measured again.
    """
    from engine.device import resolve_device

    if (folder is None) == (dataset is None):
        raise UsageError("give exactly one source of real images: a folder (--real) or a dataset (--dataset)")
    if limit is not None and limit < 2:
        raise UsageError(f"--real-limit must be at least 2 (got {limit})")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1 (got {batch_size})")
    dev = resolve_device(device) if inception is None else None
    net = inception if inception is not None else load_fid_inception(dev)
    net.eval()
    run_on = _net_device(net, dev or torch.device("cpu"))
    ident = _net_identity(net)

    if folder is not None:
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise UsageError(f"--real {root} is not a folder")
        root = root.resolve()
        files = list_images(root)
        if limit is not None:
            files = files[:limit]
        if len(files) < 2:
            raise UsageError(f"--real {root}: {len(files)} image(s) (png, jpg, jpeg, webp) found; FID needs at least 2")
        doc = {"version": STATS_VERSION, "source": "folder", "path": str(root), "limit": limit, "net": ident,
               "files": _files_fingerprint(files, root)}
        path = _cache_path(doc) if cache else None
        hit = _cached(path)
        if hit is not None:
            return RealStats(hit, str(root), hit.n, True, str(path))
        batches = _same_size_batches(_prefetched(files, _read_rgb), batch_size)
        stats = _accumulate(batches, net, run_on, len(files), progress)
        if path is not None:
            stats.to_npz(path)
        return RealStats(stats, str(root), stats.n, False, str(path) if path else None)

    from engine.data import dataset_info, open_dataset

    info = dataset_info(str(dataset))
    ds = open_dataset(info.name, root=data_root, split=split, limit=limit)
    ds.prepare()
    n = len(ds)
    source = f"dataset {info.name} (split {split})"
    if n < 2:
        raise UsageError(f"{source}: {n} image(s); FID needs at least 2")
    held = ds.in_memory()
    if held is not None:  # rendered in memory (toyfaces): the pixels themselves key the cache
        content: Any = hashlib.sha256(held[0][:n].contiguous().numpy().tobytes()).hexdigest()
    elif getattr(ds, "files", None) is not None:
        content = _files_fingerprint(list(ds.files)[:n], None)
    else:
        content = None
    doc = {"version": STATS_VERSION, "source": "dataset", "name": info.name, "split": split, "limit": limit,
           "root": str(Path(data_root).expanduser().resolve()) if data_root else None, "images": n, "net": ident,
           "content": content}
    path = _cache_path(doc) if cache and content is not None else None
    hit = _cached(path)
    if hit is not None:
        return RealStats(hit, source, hit.n, True, str(path))
    if held is not None:
        batches: Iterable[torch.Tensor] = held[0][:n].split(batch_size)
    else:
        batches = _same_size_batches(_prefetched(range(n), lambda i: ds[i][0]), batch_size)
    stats = _accumulate(batches, net, run_on, n, progress)
    if path is not None:
        stats.to_npz(path)
    return RealStats(stats, source, stats.n, False, str(path) if path else None)


# ------------------------------------------------------------------------------------------------
# Generated images.


def _to_uint8(img: torch.Tensor, convention: str = "nvidia") -> torch.Tensor:  # [B, C, H, W] in [-1, 1] -> uint8 [B, C, H, W], on its device
    """What `gencbm generate` writes, kept NCHW on the device: engine.images.to_uint8's rounding for
    StyleGAN2 (NVIDIA's), diffusers' ((x / 2 + 0.5).clamp(0, 1) * 255).round() for a DDPM."""
    x = img.detach().to(torch.float32)
    if convention == "diffusers":
        return ((x / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return (x * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def generated_batches(
    lg: Any,  # a LatentGenerator (engine.generators.latent.open_generator)
    samples: int,  # images in all
    batch_size: int,
    seed: int,  # sample i comes from seed hash(seed, i) (engine.evaluate.steerability.sample_seed)
    latent: Callable[[torch.Tensor], torch.Tensor] | None = None,  # w -> the latent to render (recon / edit)
    indices: list[int] | None = None,  # the sample indices to make (this rank's share); None: all
) -> Iterator[torch.Tensor]:
    """Batches of generated images as uint8 [B, C, R, R], exactly the pixels the PNGs would hold."""
    from engine.evaluate.steerability import sample_seed

    todo = list(range(samples)) if indices is None else list(indices)
    for start in range(0, len(todo), batch_size):
        seeds = [sample_seed(seed, 0, i) for i in todo[start : start + batch_size]]
        z = lg.z_from_seeds(seeds)  # [n, z_dim] (a DDPM: x_T)
        images = lg.render(z, latent, seeds=seeds)  # [n, C, R, R] in [-1, 1]; `latent` edits w (DDPM: the mid-block latent at t <= 400)
        yield _to_uint8(images, getattr(lg, "image_convention", "nvidia"))


# ------------------------------------------------------------------------------------------------
# `gencbm evaluate fid`.


@dataclass(frozen=True)
class FidConfig:
    gen: str = "toyfaces"  # generator: registry name, built-in name or file
    cbae: str | None = None  # CB-AE checkpoint for kind recon / edit (toyfaces: the built-in one when None)
    config: str | None = None  # the original project's YAML, for an original .pt checkpoint
    kind: str = "base"  # base: g2(w); recon: g2(D(E(w))); edit: g2(edit(w)) with concept := value
    concept: str | None = None  # kind edit: the concept to set
    value: int | None = None  # kind edit: its target value
    method: str = "swap"  # kind edit: swap | optimize
    eps: float | None = None  # optimize: L-inf radius of the latent perturbation (None: the bottleneck's recommendation, else 0.1)
    iters: int = 50  # optimize: signed-gradient steps
    alpha: float = 1.0  # blend of the edited latent with w (1: the edit alone)
    real: str | None = None  # folder of real images (recursive), or a .npz of statistics (ours or pytorch-fid's)
    dataset: str | None = None  # instead of real: a gencbm dataset (toyfaces, celebahq, ...)
    data_root: str | None = None  # the dataset's folder
    split: str = "train"  # the dataset's split
    samples: int = 10_000  # generated images
    real_limit: int | None = None  # use only the first N real images; None: all
    batch_size: int = 32  # images per forward pass (generator and Inception)
    seed: int = 0  # z ~ torch.Generator().manual_seed(seed); the result does not depend on batch_size
    truncation_psi: float = 1.0  # 1: no truncation (the usual for FID)
    device: str = "auto"  # auto | cpu | cuda[:N]
    sampling: Sampling = Sampling()  # DDPM: scheduler, steps, eta, intervene_below
    force: bool = False  # use a bottleneck trained for another generator anyway


def _check_config(cfg: FidConfig) -> None:
    if cfg.kind not in KINDS:
        raise UsageError(f"--kind must be one of {', '.join(KINDS)} (got {cfg.kind!r})")
    if cfg.samples < 2:
        raise UsageError(f"--samples must be at least 2 (got {cfg.samples})")
    if cfg.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1 (got {cfg.batch_size})")
    if (cfg.real is None) == (cfg.dataset is None):
        raise UsageError("give exactly one of --real FOLDER (or stats .npz) and --dataset NAME")
    if cfg.real_limit is not None and cfg.real_limit < 2:
        raise UsageError(f"--real-limit must be at least 2 (got {cfg.real_limit})")
    if cfg.kind == "base" and cfg.cbae:
        raise UsageError("--cbae has no effect with --kind base; use --kind recon or --kind edit")
    if cfg.kind != "edit" and (cfg.concept is not None or cfg.value is not None):
        raise UsageError("--concept and --value need --kind edit")
    if cfg.kind in ("recon", "edit") and not cfg.cbae and str(cfg.gen).strip().lower() != "toyfaces":
        raise UsageError(f"--kind {cfg.kind} needs --cbae CKPT (the CB-AE to pass the latents through)")
    if cfg.kind == "edit" and (cfg.concept is None or cfg.value is None):
        raise UsageError("--kind edit needs --concept NAME and --value V")


def evaluate_fid(cfg: FidConfig, progress: ProgressFn | None = None, inception: nn.Module | None = None) -> dict[str, Any]:
    """FID between generated images (plain, reconstructed or edited by a CB-AE) and real images.

    progress(done, total) after each batch, counting images through the feature network: the real
    images first (none on a cache hit or with a .npz), then the generated samples. `inception`
    replaces the FID Inception (any module mapping [-1, 1] images to [B, D] features).
    """
    from engine.bottleneck.interventions import EditSettings, edit_latent, reference_latent
    from engine.device import resolve_device
    from engine.generators.latent import open_generator
    from engine import distributed as D
    from engine.intervene import default_eps, open_bottleneck

    _check_config(cfg)
    settings = EditSettings(method=cfg.method, eps=cfg.eps, iters=cfg.iters, alpha=cfg.alpha)
    if cfg.kind == "edit":
        settings.resolved(None).check("cbae")
    dist = D.setup(cfg.device)
    device = resolve_device(D.rank_device(cfg.device, dist))
    net = inception if inception is not None else load_fid_inception(device)
    net.eval()
    run_on = _net_device(net, device)

    lg = open_generator(cfg.gen, device=device, truncation_psi=cfg.truncation_psi, **cfg.sampling.kwargs())
    latent = None
    where = None
    edit_doc = None
    if cfg.kind != "base":
        model, _meta, where = open_bottleneck(cfg.gen, cfg.cbae, None, cfg.config, lg, device, cfg.force)
        settings = settings.resolved(_meta, default_eps=default_eps(lg))
        model.eval()
        if cfg.kind == "recon":
            latent = lambda w: reference_latent(model, w)  # noqa: E731
        else:
            k = model.spec.index(str(cfg.concept))
            edits = [(k, model.spec.check_value(k, int(cfg.value)))]
            latent = lambda w: edit_latent(model, w, edits, settings)  # noqa: E731
            edit_doc = {"concept": model.spec.names[k], "value": edits[0][1], "method": settings.method,
                        "eps": settings.eps, "iters": settings.iters, "alpha": settings.alpha}

    real_done = [0]  # real images extracted (0 on a cache hit)

    def real_progress(done: int, total: int) -> None:
        real_done[0] = total
        if progress is not None:
            progress(done, total + cfg.samples)

    if dist.enabled and not dist.is_main:
        D.barrier(dist)  # rank 0 extracts (and caches) the real statistics first; the others then read the cache
    if cfg.real is not None and str(cfg.real).lower().endswith(".npz"):
        file = Path(cfg.real).expanduser().absolute()
        loaded = FeatureStats.from_npz(file)  # ArtifactMissingError when there is no such file
        real = RealStats(loaded, str(file), loaded.n, True, str(file))
    else:
        real = real_stats(cfg.real, dataset=cfg.dataset, data_root=cfg.data_root, split=cfg.split, limit=cfg.real_limit,
                          inception=net, batch_size=cfg.batch_size, progress=real_progress)

    if dist.enabled and dist.is_main:
        D.barrier(dist)
    fake = FeatureStats()
    done = 0
    for batch in generated_batches(lg, cfg.samples, cfg.batch_size, cfg.seed, latent, indices=D.shard(range(cfg.samples), dist)):
        fake.update(_features(net, batch, run_on))
        done += int(batch.shape[0]) * dist.world_size
        if progress is not None:
            progress(real_done[0] + min(done, cfg.samples), real_done[0] + cfg.samples)
    if dist.enabled:  # every rank's features in one accumulator, in rank order
        parts = [FeatureStats.from_state(st) for st in D.gather_objects(fake.state(), dist)]
        fake = parts[0]
        for part in parts[1:]:
            fake.merge(part)
    if fake.dim != real.stats.dim:
        raise GencbmError(f"the real statistics ({real.source}) have {real.stats.dim} feature dimensions, the network gives {fake.dim}")
    fid = frechet_distance(fake.mean(), fake.cov(), real.stats.mean(), real.stats.cov())

    notes = []
    dim = int(fake.dim or 0)
    if cfg.samples < dim or 0 < real.images < dim:
        notes.append(f"fewer images than feature dimensions ({dim}): the covariance is rank-deficient and FID is biased "
                     "upward; compare only FIDs with the same sample counts (10,000+ is usual)")
    return {
        "fid": float(fid),
        "kind": cfg.kind,
        "samples": int(cfg.samples),
        "real": real.to_json(),
        "standard": str(getattr(net, "standard", "custom features")),
        "generator": str(cfg.gen),
        "bottleneck": where,
        "edit": edit_doc,
        "seed": int(cfg.seed),
        "feature_dim": dim,
        "notes": notes,
    }
