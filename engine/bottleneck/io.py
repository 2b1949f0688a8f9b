"""Reading and writing bottlenecks: gencbm's safetensors checkpoints and the original project's files.

Ours: safetensors with JSON metadata (kind, concept spec, architecture, the generator it was trained
on, the training config), written atomically by engine.store.checkpoint.

The original's: a bare `torch.save(cbae.state_dict())` (`..._cbae.pt`, `..._cc.pt`), read with
`torch.load(weights_only=True)`, together with its YAML config (`config/<expt>/<dataset>.yaml`) for
the concept names and `num_ws`; for the two published StyleGAN2 checkpoints the registry carries
those facts, so no YAML is needed. The architecture (width, depth, output size) is read off the
state dict.
"""

from __future__ import annotations

import ast
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.bottleneck.modules import CBAE, CC, Bottleneck
from engine.bottleneck.spec import ORIGINAL_CELEBA_NAMES, ConceptSpec
from engine.errors import CorruptFileError, UsageError
from engine.store.checkpoint import GeneratorIdentity, load_model_checkpoint, save_model_checkpoint

KINDS = ("cbae", "cc")


@dataclass(frozen=True)
class OriginalConfig:
    """The parts of an original project YAML config that gencbm uses."""

    path: str  # where it was read from
    spec: ConceptSpec  # concepts (CelebA names where the config used the original's words), unknown dims
    w_dim: int  # model.latent_noise_dim
    num_ws: int | None  # model.num_ws (StyleGAN2)
    latent_shape: tuple[int, ...] | None  # model.latent_shape (DDPM: the UNet mid-block map, e.g. [512, 8, 8])
    model_type: str  # model.type, e.g. cbae_stygan2, cc_stygan2, cbae_ddpm
    pretrained: str | None  # model.pretrained: the base generator's file in the original layout
    dataset: str | None  # dataset.name
    batch_size: int | None  # dataset.batch_size
    pl_prob_thresh: float | None  # train_config.pl_prob_thresh
    lr: float | None  # train_config.conc_lr (or recon_lr)
    betas: tuple[float, float] | None  # train_config.betas
    steps: int | None  # epochs x steps_per_epoch

    @property
    def kind(self) -> str | None:
        t = self.model_type.lower()
        return "cc" if t.startswith("cc") else "cbae" if t.startswith("cbae") else None


def _as_tuple(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = ast.literal_eval(value)
    return (float(value[0]), float(value[1]))


def spec_from_original_names(names: list[str], outputs: list[int]) -> ConceptSpec:
    """ConceptSpec of an original config's `concept_names` / `concept_output` (an `unknown` entry last)."""
    names = [str(n) for n in names]
    outputs = [int(o) for o in outputs]
    unknown = 0
    if names and names[-1].lower() == "unknown":
        if len(outputs) != len(names):
            raise UsageError("the config's concept_output and concept_names differ in length")
        unknown = outputs[-1]
        names, outputs = names[:-1], outputs[:-1]
    outputs = outputs[: len(names)]
    if len(outputs) != len(names):
        raise UsageError("the config's concept_output and concept_names differ in length")
    mapped = [ORIGINAL_CELEBA_NAMES.get(n.lower(), n) for n in names]
    aliases = tuple(names) if mapped != names else ()
    return ConceptSpec(names=tuple(mapped), sizes=tuple(outputs), unknown=unknown, aliases=aliases)


def read_original_config(path: str | os.PathLike) -> OriginalConfig:
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"no such config file: {p}")
    try:
        doc = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UsageError(f"{p}: not a readable YAML file ({str(exc).splitlines()[0]})") from None
    try:
        model = doc["model"]
        concepts = model["concepts"]
        names = list(concepts["concept_names"])
        outputs = list(concepts.get("concept_output") or concepts["concept_bins"])
        train = doc.get("train_config") or {}
        data = doc.get("dataset") or {}
        epochs, per_epoch = train.get("epochs"), train.get("steps_per_epoch")
        return OriginalConfig(
            path=str(p),
            spec=spec_from_original_names(names, outputs),
            w_dim=int(model["latent_noise_dim"]),
            num_ws=int(model["num_ws"]) if model.get("num_ws") is not None else None,
            latent_shape=tuple(int(d) for d in model["latent_shape"]) if model.get("latent_shape") else None,
            model_type=str(model.get("type", "")),
            pretrained=model.get("pretrained"),
            dataset=data.get("name"),
            batch_size=int(data["batch_size"]) if data.get("batch_size") else None,
            pl_prob_thresh=float(train["pl_prob_thresh"]) if train.get("pl_prob_thresh") is not None else None,
            lr=float(train.get("conc_lr", train.get("recon_lr"))) if (train.get("conc_lr") or train.get("recon_lr")) else None,
            betas=_as_tuple(train.get("betas")),
            steps=int(epochs) * int(per_epoch) if epochs and per_epoch else None,
        )
    except (KeyError, TypeError, ValueError, SyntaxError) as exc:
        raise UsageError(f"{p}: not an original gencbm-style config (model.concepts / latent_noise_dim missing or malformed: {exc})") from None


# ------------------------------------------------------------------------------------------------
# Architecture from a state dict.

_KEY = re.compile(r"^(encoder|decoder)\.(\d+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")


def _architecture(state: dict[str, torch.Tensor], where: str) -> tuple[str, int, int, int, int]:
    """(kind, w_dim, hidden, depth, total logits) of an original-layout state dict."""
    bad = [k for k in state if not _KEY.match(k)]
    if bad or "encoder.0.weight" not in state:
        raise CorruptFileError(f"{where}: not a CB-AE/CC state dict (unexpected keys such as {bad[:2] or list(state)[:2]})")
    linears = sorted(int(k.split(".")[1]) for k in state if k.startswith("encoder.") and k.endswith(".weight")
                     and state[k].ndim == 2)
    depth = len(linears) - 1
    if linears != [3 * i for i in range(depth + 1)]:
        raise CorruptFileError(f"{where}: the encoder's layers are not Linear/LeakyReLU/BatchNorm blocks")
    first, last = state["encoder.0.weight"], state[f"encoder.{3 * depth}.weight"]
    kind = "cbae" if any(k.startswith("decoder.") for k in state) else "cc"
    hidden = int(first.shape[0]) if depth > 0 else int(first.shape[1])
    return kind, int(first.shape[1]), hidden, depth, int(last.shape[0])


def build(kind: str, spec: ConceptSpec, w_dim: int, num_ws: int, hidden: int | None = None, depth: int = 3) -> Bottleneck:
    """A bottleneck on StyleGAN2-style w [num_ws, w_dim]."""
    if kind not in KINDS:
        raise UsageError(f"unknown bottleneck kind {kind!r} (valid: {', '.join(KINDS)})")
    return (CBAE if kind == "cbae" else CC)(spec, w_dim, num_ws, hidden=hidden, depth=depth)


def build_for(kind: str, spec: ConceptSpec, latent_shape: tuple[int, ...], hidden: int | None = None, depth: int = 3) -> Bottleneck:
    """A bottleneck for a generator's latent shape: [num_ws, w_dim] (ws layout) or [C, H, W] (flat layout)."""
    if kind not in KINDS:
        raise UsageError(f"unknown bottleneck kind {kind!r} (valid: {', '.join(KINDS)})")
    cls = CBAE if kind == "cbae" else CC
    if len(latent_shape) == 2:
        return cls(spec, int(latent_shape[1]), int(latent_shape[0]), hidden=hidden, depth=depth)
    return cls(spec, 0, 0, hidden=hidden, depth=depth, flat_shape=tuple(latent_shape))


def _load_state(model: Bottleneck, state: dict[str, torch.Tensor], where: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CorruptFileError(f"{where}: the weights do not fit a {model.kind} of this shape ({str(exc).splitlines()[0]})") from None


# ------------------------------------------------------------------------------------------------
# Save / load.


def save_bottleneck(path: str | os.PathLike, model: Bottleneck, *, generator: GeneratorIdentity | None,
                    training: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Path:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return save_model_checkpoint(
        path, state, kind=model.kind, generator=generator, concepts=model.spec.to_json(),
        latent={"kind": "unet-mid" if model.layout == "flat" else "w", "shape": list(model.latent_shape)}, training=training,
        extra={"architecture": model.config(), **(extra or {})},
    )


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _registry_settings(path: Path) -> dict[str, Any] | None:
    """Settings of the registry artifact whose file name this is (the published original checkpoints)."""
    from engine.store.registry import load_registry

    for art in load_registry():
        if art.kind in KINDS and getattr(art, "file", None) == path.name:
            return dict(art.settings or {})
    return None


def _spec_from_registry(settings: dict[str, Any], total: int) -> ConceptSpec:
    concepts = settings["concepts"]
    names = tuple(c["name"] for c in concepts)
    values = tuple(tuple(c.get("values") or ()) for c in concepts)
    sizes = tuple(len(v) or 2 for v in values)
    unknown = settings.get("unknown_dims")
    unknown = int(unknown) if unknown is not None else total - sum(sizes)
    return ConceptSpec(names=names, sizes=sizes, unknown=unknown, values=values if all(values) else (),
                       aliases=tuple(c.get("config_name", c["name"]) for c in concepts))


def read_original_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused or a damaged archive
        raise CorruptFileError(f"{path}: not a loadable state dict ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CorruptFileError(f"{path}: not a state dict of tensors")
    for prefix in ("module.", "cbae."):
        if obj and all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def load_bottleneck(
    value: str | os.PathLike,  # a checkpoint file (ours or the original's) or a registry name
    *,
    kind: str | None = None,  # expected kind ("cbae" / "cc"); None: either
    config: str | os.PathLike | None = None,  # the original YAML (needed for an original file not in the registry)
    num_ws: int | None = None,  # the generator's num_ws (when the config does not say)
    latent_shape: tuple[int, ...] | None = None,  # the generator's latent shape (when the config does not say)
    generator: GeneratorIdentity | None = None,  # the generator in use: refuse a checkpoint trained for another
    force: bool = False,  # load despite a generator mismatch
    device: str | torch.device = "cpu",
) -> tuple[Bottleneck, dict[str, Any]]:
    """(bottleneck in eval mode, metadata)."""
    from engine.store.artifacts import resolve

    path = resolve(value, kinds=KINDS, what="bottleneck checkpoint")
    if path.is_dir():
        raise UsageError(f"{path} is a folder, not a bottleneck checkpoint")
    if _is_safetensors(path):
        tensors, meta = load_model_checkpoint(path, kind=KINDS, generator=generator, force=force)
        arch = meta.get("architecture") or {}
        spec = ConceptSpec.from_json(meta["concepts"])
        if arch.get("layout") == "flat":
            model = build_for(meta["kind"], spec, tuple(arch["latent_shape"]), int(arch["hidden"]), int(arch["depth"]))
        else:
            model = build(meta["kind"], spec, int(arch["w_dim"]), int(arch["num_ws"]), int(arch["hidden"]), int(arch["depth"]))
        _load_state(model, tensors, str(path))
        meta = {**meta, "path": str(path), "format": "gencbm"}
    else:
        state = read_original_state(path)
        found_kind, w_dim, hidden, depth, total = _architecture(state, str(path))
        cfg = read_original_config(config) if config is not None else None
        settings = _registry_settings(path) if cfg is None else None
        flat = None  # a feature-map latent [C, H, W] (DDPM), read off the config, the registry or the generator
        if cfg is not None:
            spec = cfg.spec
            flat = cfg.latent_shape if cfg.latent_shape and len(cfg.latent_shape) == 3 else None
            if flat is None and cfg.w_dim != w_dim:
                raise UsageError(f"{cfg.path} says latent_noise_dim {cfg.w_dim} but {path.name} has {w_dim}")
            num_ws = cfg.num_ws or num_ws
        elif settings is not None:
            spec = _spec_from_registry(settings, total)
            shape = (settings.get("latent") or {}).get("shape") or []
            if len(shape) == 3:
                flat = tuple(int(d) for d in shape)
            else:
                num_ws = num_ws or (shape[0] if shape else None)
        else:
            raise UsageError(f"{path.name} is an original-format checkpoint: pass --config with its YAML (config/<experiment>/<dataset>.yaml)")
        if flat is None and latent_shape is not None and len(latent_shape) == 3:
            flat = tuple(latent_shape)
        if spec.total != total:
            raise UsageError(f"the config describes {spec.total} concept logits (with {spec.unknown} unknown) but {path.name} outputs {total}")
        if flat is not None:
            if math.prod(flat) != w_dim:
                raise UsageError(f"{path.name} reads {w_dim} latent values but the latent is {list(flat)} ({math.prod(flat)} values)")
            model = build_for(found_kind, spec, flat, hidden, depth)
        else:
            if num_ws is None:
                raise UsageError(f"{path.name}: num_ws is unknown; pass --config with model.num_ws")
            model = build(found_kind, spec, w_dim, int(num_ws), hidden, depth)
        _load_state(model, state, str(path))
        meta = {"kind": found_kind, "format": "original", "path": str(path), "concepts": spec.to_json(),
                "architecture": model.config(), "generator": None,
                "config": cfg.path if cfg is not None else (settings or {}).get("original_config")}
    if kind is not None and meta["kind"] != kind:
        raise UsageError(f"{path} holds a {meta['kind']}, not a {kind} (use --{meta['kind']})")
    return model.to(device).eval(), meta
