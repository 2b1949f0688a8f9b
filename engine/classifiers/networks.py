"""The networks behind concept classifiers, laid out as the original project's checkpoints.

- resnet18 / resnet50: torchvision ResNets with `fc` replaced by Linear(512 | 2048, 2)
  (state-dict keys `fc.weight`, `fc.bias`; the original's tokens `rn18`, `rn50`);
- vit_l_16: torchvision ViT-L/16 at 512 px (the SWAG end-to-end weights' size) with `heads`
  replaced by a bare Linear(1024, 2) (keys `heads.weight`, `heads.bias`, not `heads.head.*`);
- small-cnn: gencbm's SmallCNN(num_outputs=2) for low-resolution images (not in the original).

`--init imagenet` loads torchvision's ImageNet weights from the artifact store (never through
torchvision's own downloader): a missing artifact exits 3 naming `gencbm download NAME`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from engine.errors import CorruptFileError, UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
UNIT_MEAN = (0.5, 0.5, 0.5)  # small-cnn sees images in [-1, 1]: (x01 - 0.5) / 0.5
UNIT_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ArchSpec:
    name: str  # our name (--arch)
    token: str  # the original project's token in `{dataset}_{Concept}_{token}_conclsf.pth`
    torchvision: bool  # a torchvision model (ImageNet normalisation, ImageNet weights available)
    input_size: int | None  # a fixed input size the network needs (ViT-L/16: 512); None: the dataset's
    weights_artifact: str | None  # registry name of the ImageNet weights
    resize_mode: str  # interpolation when predict_proba resizes generated images (the original's choice)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    aliases: tuple[str, ...] = field(default=())


ARCH_SPECS: dict[str, ArchSpec] = {
    "resnet18": ArchSpec("resnet18", "rn18", True, None, "torchvision-resnet18", "bicubic", aliases=("rn18",)),
    "resnet50": ArchSpec("resnet50", "rn50", True, None, "torchvision-resnet50", "bicubic", aliases=("rn50",)),
    "vit_l_16": ArchSpec("vit_l_16", "vit_l_16", True, 512, "torchvision-vit-l-16-swag", "bilinear", aliases=("vitl16", "vit-l-16")),
    "small-cnn": ArchSpec("small-cnn", "smallcnn", False, None, None, "bilinear", UNIT_MEAN, UNIT_STD, aliases=("smallcnn",)),
}
ARCHS = tuple(ARCH_SPECS)
TOKEN_TO_ARCH = {spec.token: name for name, spec in ARCH_SPECS.items()}


def arch_spec(arch: str) -> ArchSpec:
    """The spec of an arch name or alias (forgiving: `ResNet18`, `rn18`, `small_cnn`, `vit-l-16`)."""
    from engine.concepts import match_concept, normalize_concept_name

    key = normalize_concept_name(arch).replace(" ", "")
    for name, spec in ARCH_SPECS.items():
        if key in {normalize_concept_name(a).replace(" ", "") for a in (name, spec.token, *spec.aliases)}:
            return spec
    return ARCH_SPECS[match_concept(arch, ARCHS, what="arch")]


def _torchvision_model(arch: str) -> nn.Module:
    from torchvision import models

    if arch == "resnet18":
        return models.resnet18(weights=None)
    if arch == "resnet50":
        return models.resnet50(weights=None)
    if arch == "vit_l_16":
        return models.vit_l_16(weights=None, image_size=512)
    raise UsageError(f"{arch} is not a torchvision arch")


def _replace_head(net: nn.Module, arch: str, num_outputs: int) -> None:
    if arch in ("resnet18", "resnet50"):
        net.fc = nn.Linear(net.fc.in_features, num_outputs)  # type: ignore[union-attr]
    elif arch == "vit_l_16":
        net.heads = nn.Linear(net.heads.head.in_features, num_outputs)  # type: ignore[union-attr]


def load_imagenet_weights(net: nn.Module, arch: str) -> None:
    """Load torchvision's ImageNet weights from the store into a torchvision model with its 1000-way head."""
    from engine.store.artifacts import resolve_artifact

    spec = arch_spec(arch)
    if spec.weights_artifact is None:
        raise UsageError(f"--init imagenet: there are no ImageNet weights for {spec.name}; use --init none")
    path = resolve_artifact(spec.weights_artifact)  # exit 3 naming `gencbm download NAME` when missing
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CorruptFileError(f"{path}: not a loadable torch state dict ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise CorruptFileError(f"{path}: expected a state dict, found {type(state).__name__}")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CorruptFileError(f"{path} does not fit torchvision's {spec.name}: {str(exc).splitlines()[0]}") from None


def build_network(
    arch: str,  # resnet18, resnet50, vit_l_16 or small-cnn
    *,
    num_outputs: int = 2,  # logits: 2 for a binary concept ("not X", "X")
    init: str = "none",  # "imagenet": torchvision ImageNet weights from the store (body; the head is new); "none": random
    arch_kwargs: dict[str, Any] | None = None,  # small-cnn only: width, stages, in_channels
) -> nn.Module:
    """A classifier network with its head replaced by Linear(features, num_outputs)."""
    spec = arch_spec(arch)
    if init not in ("imagenet", "none"):
        raise UsageError(f"--init must be imagenet or none (got {init!r})")
    if spec.name == "small-cnn":
        if init == "imagenet":
            raise UsageError("--init imagenet: small-cnn has no ImageNet weights; use --init none")
        from engine.classifiers.small_cnn import SmallCNN

        return SmallCNN(num_outputs=num_outputs, **(arch_kwargs or {}))
    net = _torchvision_model(spec.name)
    if init == "imagenet":
        load_imagenet_weights(net, spec.name)
    _replace_head(net, spec.name, num_outputs)
    return net


def infer_arch(state: dict[str, torch.Tensor], where: str = "state dict") -> tuple[str, dict[str, Any], int]:
    """(arch, arch_kwargs, num_outputs) from the keys and shapes of a classifier state dict."""
    if "heads.weight" in state and "encoder.pos_embedding" in state:
        tokens = state["encoder.pos_embedding"].shape[1] - 1
        side = int(round(tokens ** 0.5)) * 16
        if state["heads.weight"].shape[1] != 1024 or side != 512:
            raise CorruptFileError(f"{where}: a ViT that is not ViT-L/16 at 512 px (hidden {state['heads.weight'].shape[1]}, {side} px)")
        return "vit_l_16", {}, int(state["heads.weight"].shape[0])
    if "heads.head.weight" in state:
        raise CorruptFileError(f"{where}: a ViT with torchvision's own `heads.head`; concept classifiers replace `heads` by one Linear")
    if "fc.weight" in state and "conv1.weight" in state:
        if "layer1.0.conv3.weight" in state:
            if "layer3.5.conv1.weight" in state and "layer3.6.conv1.weight" not in state and "layer4.2.conv1.weight" in state:
                return "resnet50", {}, int(state["fc.weight"].shape[0])
            raise CorruptFileError(f"{where}: a bottleneck ResNet that is not ResNet-50")
        if "layer3.2.conv1.weight" in state:
            raise CorruptFileError(f"{where}: a ResNet that is not ResNet-18 (ResNet-34?); supported: resnet18, resnet50")
        return "resnet18", {}, int(state["fc.weight"].shape[0])
    if "features.0.weight" in state and "head.weight" in state:
        first = state["features.0.weight"]
        convs = [k for k in state if k.startswith("features.") and k.endswith(".weight") and state[k].ndim == 4]
        kwargs = {"width": int(first.shape[0]), "stages": len(convs) // 2, "in_channels": int(first.shape[1])}
        return "small-cnn", kwargs, int(state["head.weight"].shape[0])
    raise CorruptFileError(f"{where}: not a state dict of a supported classifier (resnet18, resnet50, vit_l_16, small-cnn)")


def network_from_state(arch: str, state: dict[str, torch.Tensor], *, arch_kwargs: dict[str, Any] | None = None,
                       num_outputs: int = 2, where: str = "state dict") -> nn.Module:
    """Build `arch` without random initialisation and load `state` into it (strict)."""
    with torch.device("meta"):
        net = build_network(arch, num_outputs=num_outputs, init="none", arch_kwargs=arch_kwargs)
    try:
        net.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise CorruptFileError(f"{where} does not fit {arch}: {str(exc).splitlines()[0]}") from None
    leftover = [n for n, t in [*net.named_parameters(), *net.named_buffers()] if t.is_meta]
    if leftover:
        raise CorruptFileError(f"{where} lacks {leftover[0]} for {arch}")
    return net
