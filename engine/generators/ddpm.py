"""DDPM through diffusers: a `UNet2DModel` split at its mid block, and sampling with diffusers' schedulers.

Kulkarni et al. (CVPR 2025) put the concept bottleneck on the UNet's bottleneck: for
google/ddpm-celebahq-256 the mid-block output, [512, 8, 8]. The split runs diffusers' own
sub-modules in the order `UNet2DModel.forward` runs them (no copy of the UNet):

  g1(x_t, t) = time projection + time embedding (+ class embedding), conv_in, the down blocks
               (their skip activations kept), the mid block      -> (h [B, C, H, W], context)
  g2(h, ctx) = the up blocks on h with the kept skips, the output norm/act/conv (+ the skip-sample
               path of skip-type blocks, the Fourier 1/t)        -> the model output (noise)

so that g2(*g1(x, t)) is `unet(x, t).sample` exactly.

Sampling (`render`) is diffusers' loop: a scheduler's `set_timesteps(steps)`, then for each t the
UNet (through g1/g2, with an optional latent edit at the steps t <= intervene_below) and
`scheduler.step`. Defaults as the original project: `DDIMScheduler(num_train_timesteps=1000)` with
diffusers' default settings, 50 steps, eta 0. Seed convention: per image
`torch.randn([1, C, H, W], generator=torch.Generator("cpu").manual_seed(seed))`, the noise
`DDIMPipeline(...)(generator=[torch.Generator().manual_seed(s) for s in seeds])` draws. Stochastic
steps (DDPM, DDIM with eta > 0) draw their noise per image from that same generator, so an image
does not depend on the batch it is made in, and the edited and the un-edited run of a seed see the
same noise. Images: [-1, 1]; 8-bit as diffusers' pipelines, ((x / 2 + 0.5).clamp(0, 1) * 255).round().
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from engine.errors import CorruptFileError, UsageError

SCHEDULERS = ("ddim", "ddpm")
DEFAULT_STEPS = {"ddim": 50, "ddpm": 1000}
DEFAULT_INTERVENE_BELOW = 400  # the original applies its edits at t <= 400 of 1000
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")

Edit = Callable[[torch.Tensor], torch.Tensor]  # latent [B, C, H, W] -> edited latent


@dataclass
class UNetContext:
    """What g2 needs besides the latent: the time embedding and the skip activations of one g1 call."""

    emb: torch.Tensor  # [B, time_embed_dim]
    skips: tuple[torch.Tensor, ...]  # conv_in output and every down-block resnet / downsampler output
    timesteps: torch.Tensor  # [B]
    skip_sample: torch.Tensor | None = None  # skip-type blocks' running image path (None otherwise)


def _timesteps(unet, t, batch: int, device) -> torch.Tensor:
    """t as UNet2DModel.forward broadcasts it: an int/float/0-d tensor or [B] -> [B]."""
    if not torch.is_tensor(t):
        t = torch.tensor([t], dtype=torch.long, device=device)
    elif t.ndim == 0:
        t = t[None].to(device)
    return t * torch.ones(batch, dtype=t.dtype, device=t.device)


def unet_g1(unet, sample: torch.Tensor, t, class_labels: torch.Tensor | None = None) -> tuple[torch.Tensor, UNetContext]:
    """The UNet up to and including its mid block (see the module docstring)."""
    cfg = unet.config
    if cfg.center_input_sample:
        sample = 2 * sample - 1.0
    timesteps = _timesteps(unet, t, sample.shape[0], sample.device)
    emb = unet.time_embedding(unet.time_proj(timesteps).to(dtype=unet.dtype))
    if unet.class_embedding is not None:
        if class_labels is None:
            raise UsageError("this UNet is class-conditional: pass --class K")
        labels = unet.time_proj(class_labels) if cfg.class_embed_type == "timestep" else class_labels
        emb = emb + unet.class_embedding(labels).to(dtype=unet.dtype)
    elif class_labels is not None:
        raise UsageError("--class was given but this UNet is unconditional")
    skip_sample = sample
    h = unet.conv_in(sample)
    skips: tuple[torch.Tensor, ...] = (h,)
    for block in unet.down_blocks:
        if hasattr(block, "skip_conv"):
            h, res, skip_sample = block(hidden_states=h, temb=emb, skip_sample=skip_sample)
        else:
            h, res = block(hidden_states=h, temb=emb)
        skips += res
    if unet.mid_block is not None:
        h = unet.mid_block(h, emb)
    return h, UNetContext(emb=emb, skips=skips, timesteps=timesteps)


def unet_g2(unet, h: torch.Tensor, ctx: UNetContext) -> torch.Tensor:
    """The UNet after its mid block: up blocks on the (possibly edited) latent, then the output head."""
    skips = ctx.skips
    skip_sample = None
    for block in unet.up_blocks:
        n = len(block.resnets)
        res, skips = skips[-n:], skips[:-n]
        if hasattr(block, "skip_conv"):
            h, skip_sample = block(h, res, ctx.emb, skip_sample)
        else:
            h = block(h, res, ctx.emb)
    if unet.conv_norm_out is not None:
        h = unet.conv_norm_out(h)
        h = unet.conv_act(h)
    h = unet.conv_out(h)
    if skip_sample is not None:
        h = h + skip_sample
    if unet.config.time_embedding_type == "fourier":
        h = h / ctx.timesteps.reshape((h.shape[0],) + (1,) * (h.ndim - 1))
    return h


def make_scheduler(kind: str = "ddim", num_train_timesteps: int = 1000):
    """A fresh diffusers scheduler with its default settings (the original: DDIMScheduler(num_train_timesteps=1000))."""
    from diffusers import DDIMScheduler, DDPMScheduler

    if kind not in SCHEDULERS:
        raise UsageError(f"--scheduler must be one of {', '.join(SCHEDULERS)} (got {kind!r})")
    return (DDIMScheduler if kind == "ddim" else DDPMScheduler)(num_train_timesteps=num_train_timesteps)


def to_uint8_diffusers(img: torch.Tensor):  # [B, C, H, W] in [-1, 1] -> [B, H, W, C] uint8 numpy
    """8-bit conversion as diffusers' pipelines: ((x / 2 + 0.5).clamp(0, 1) * 255).round()."""
    x = ((img.detach().float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


@dataclass
class DDPMLatent:
    """A frozen diffusers UNet2DModel as a gencbm generator (DESIGN rule 2): z is the initial noise
    x_T, the latent is the mid-block output at a denoising step, images come from `render`."""

    unet: torch.nn.Module  # diffusers.UNet2DModel, eval mode, no gradients
    name: str  # what the user asked for
    scheduler: str = "ddim"  # ddim | ddpm
    steps: int | None = None  # denoising steps; None: 50 for DDIM, 1000 for DDPM
    eta: float = 0.0  # DDIM eta (0: deterministic)
    intervene_below: int = DEFAULT_INTERVENE_BELOW  # edits act at the steps with t <= this
    class_idx: int | None = None  # class label for class-conditional UNets
    num_train_timesteps: int = 1000
    info: dict[str, Any] = field(default_factory=dict)  # where it was loaded from
    intervene_below_given: bool = False  # set by the user (else a bottleneck's recommendation may replace it)

    family = "ddpm"
    image_convention = "diffusers"
    world = None  # no toyfaces ground truth

    def __post_init__(self):
        if self.scheduler not in SCHEDULERS:
            raise UsageError(f"--scheduler must be one of {', '.join(SCHEDULERS)} (got {self.scheduler!r})")
        if self.steps is None:
            self.steps = DEFAULT_STEPS[self.scheduler]
        if not 1 <= int(self.steps) <= self.num_train_timesteps:
            raise UsageError(f"--steps must be in 1..{self.num_train_timesteps} (got {self.steps})")
        if not 0.0 <= self.eta <= 1.0:
            raise UsageError(f"--eta must be in [0, 1] (got {self.eta})")
        if self.eta and self.scheduler != "ddim":
            raise UsageError("--eta applies to the DDIM scheduler only")
        if not 0 <= self.intervene_below <= self.num_train_timesteps:
            raise UsageError(f"--intervene-below must be in 0..{self.num_train_timesteps} (got {self.intervene_below})")
        conditional = getattr(self.unet, "class_embedding", None) is not None
        if conditional and self.class_idx is None:
            raise UsageError("this UNet is class-conditional: pass --class K")
        if not conditional and self.class_idx is not None:
            raise UsageError("--class was given but this UNet is unconditional")

    # ---- shape facts ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def resolution(self) -> int:
        size = self.unet.config.sample_size
        return int(size if isinstance(size, int) else size[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        size = self.unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return (self.channels, int(h), int(w))

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """[C, H, W] of the mid-block output: the last block's width; one halving per down block but the last."""
        cfg = self.unet.config
        n_down = len(cfg.down_block_types) - 1
        _, h, w = self.image_shape
        return (int(cfg.block_out_channels[-1]), h // 2**n_down, w // 2**n_down)

    # ---- noise ---------------------------------------------------------------------------------
    def seed_generators(self, seeds: Sequence[int]) -> list[torch.Generator]:
        return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]

    def z_from_seeds(self, seeds: Sequence[int]) -> torch.Tensor:  # x_T [B, C, H, W] on the device
        return torch.cat([torch.randn((1, *self.image_shape), generator=g) for g in self.seed_generators(seeds)]).to(self.device)

    def sample_z(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn((n, *self.image_shape), generator=generator).to(self.device)

    def _labels(self, n: int) -> torch.Tensor | None:
        if self.class_idx is None:
            return None
        return torch.full((n,), int(self.class_idx), dtype=torch.long, device=self.device)

    # ---- the split -----------------------------------------------------------------------------
    def g1(self, x_t: torch.Tensor, t) -> tuple[torch.Tensor, UNetContext]:
        return unet_g1(self.unet, x_t, t, self._labels(x_t.shape[0]))

    def g2(self, h: torch.Tensor, ctx: UNetContext) -> torch.Tensor:
        return unet_g2(self.unet, h, ctx)

    def new_scheduler(self, kind: str | None = None):
        return make_scheduler(kind or self.scheduler, self.num_train_timesteps)

    # ---- sampling ------------------------------------------------------------------------------
    def render(self, z: torch.Tensor, edit: Edit | None = None, seeds: Sequence[int] | None = None,
               progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Denoise x_T = z [B, C, H, W] into images in [-1, 1]; `edit(h)` replaces the latent at the
        steps with t <= intervene_below. Stochastic steps draw per-image noise from generators seeded
        by `seeds` (advanced past x_T), else from generators seeded 0..B-1: the same for every call,
        so an edited run and its reference share their noise."""
        sched = self.new_scheduler()
        sched.set_timesteps(int(self.steps))
        stochastic = self.scheduler == "ddpm" or self.eta > 0
        gens = None
        if stochastic:
            gens = self.seed_generators(seeds if seeds is not None else range(z.shape[0]))
            for g in gens:  # the first draw of a seed's generator is x_T itself
                torch.randn((1, *self.image_shape), generator=g)
        x = z.to(self.device)
        total = len(sched.timesteps)
        for i, t in enumerate(sched.timesteps):
            with torch.no_grad():
                h, ctx = self.g1(x, t)
            if edit is not None and int(t) <= self.intervene_below:
                h = edit(h)
            with torch.no_grad():
                out = self.g2(h.detach(), ctx)
                kwargs = {"eta": self.eta} if self.scheduler == "ddim" else {}
                if gens is not None:
                    kwargs["generator"] = gens
                x = sched.step(out, t, x, **kwargs).prev_sample
            if progress is not None:
                progress(i + 1, total)
        return x

    def to_uint8(self, img: torch.Tensor):
        return to_uint8_diffusers(img)

    def describe(self) -> dict[str, Any]:
        return {"family": "ddpm", "scheduler": self.scheduler, "steps": int(self.steps), "eta": self.eta,
                "intervene_below": self.intervene_below, "latent_shape": list(self.latent_shape), **self.info}


# ------------------------------------------------------------------------------------------------
# Finding and loading a UNet.


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(doc, dict):
        raise CorruptFileError(f"{path}: expected a JSON object")
    return doc


def unet_folder(path: Path) -> Path | None:
    """The diffusers UNet2DModel folder behind `path` (the folder itself, or a pipeline's unet/), else None."""
    path = Path(path)
    if not path.is_dir():
        return None
    for folder in (path, path / "unet"):
        cfg = folder / "config.json"
        if cfg.is_file():
            doc = _read_json(cfg)
            if doc.get("_class_name") == "UNet2DModel" or ("down_block_types" in doc and "block_out_channels" in doc):
                return folder
    return None


def is_ddpm(name_or_path: str | os.PathLike) -> bool:
    """Whether a --gen value names a diffusers DDPM (a UNet or pipeline folder, or a ddpm registry entry)."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        return p.is_dir() and unet_folder(p) is not None
    from engine.store.registry import load_registry
    from engine.toyfaces.builtin import DDPMS

    if str(name_or_path).strip().lower() in DDPMS:
        return True

    art = load_registry().find(str(name_or_path))
    return art is not None and (art.settings or {}).get("family") == "ddpm"


def resolve_unet_folder(name_or_path: str | os.PathLike) -> Path:
    from engine.store.artifacts import resolve
    from engine.toyfaces.builtin import builtin_ddpm

    builtin = builtin_ddpm(str(name_or_path)) if not Path(name_or_path).expanduser().exists() else None
    path = builtin if builtin is not None else resolve(name_or_path, kinds=("generator",), what="generator")
    folder = unet_folder(path)
    if folder is None:
        raise UsageError(f"{path} is not a diffusers UNet2DModel folder (config.json + weights) nor a pipeline folder with unet/")
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        raise CorruptFileError(f"{folder} has no {' or '.join(WEIGHT_FILES)}")
    return folder


def load_unet(folder: Path, device: str | torch.device = "cpu"):
    """UNet2DModel from a local folder, frozen, in eval mode (no network: local_files_only)."""
    from diffusers import UNet2DModel
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    try:
        unet = UNet2DModel.from_pretrained(str(folder), local_files_only=True, low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError, KeyError, EnvironmentError) as exc:
        raise CorruptFileError(f"{folder}: cannot load the UNet ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    unet.requires_grad_(False)
    return unet.to(device).eval()


def weights_sha256(folder: Path) -> str:
    """sha256 of the UNet's weight file (safetensors preferred), cached by the store's hash cache."""
    from engine.store import manifest as mf

    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return mf.cached_sha256(folder / name)
    raise CorruptFileError(f"{folder} has no {' or '.join(WEIGHT_FILES)}")


def ddpm_identity(name_or_path: str | os.PathLike):
    """GeneratorIdentity of a DDPM: its registry name (or folder name) and the sha256 of its weights."""
    from engine.store.checkpoint import GeneratorIdentity
    from engine.store.registry import load_registry

    from engine.toyfaces.builtin import DDPMS

    folder = resolve_unet_folder(name_or_path)
    text = str(name_or_path)
    exists = Path(text).expanduser().exists()
    art = load_registry().find(text) if not exists else None
    if not exists and text.strip().lower() in DDPMS:
        name = text.strip().lower()
    else:
        name = art.name if art is not None else Path(text).expanduser().resolve().name
    return GeneratorIdentity(name=name, sha256=weights_sha256(folder))


def open_ddpm(name_or_path: str | os.PathLike, *, device: str | torch.device = "cpu", scheduler: str = "ddim",
              steps: int | None = None, eta: float = 0.0, intervene_below: int | None = None,
              class_idx: int | None = None) -> DDPMLatent:
    folder = resolve_unet_folder(name_or_path)
    unet = load_unet(folder, device)
    train_steps = 1000
    for sched_cfg in (folder / "scheduler_config.json", folder.parent / "scheduler" / "scheduler_config.json"):
        if sched_cfg.is_file():
            train_steps = int(_read_json(sched_cfg).get("num_train_timesteps", 1000))
            break
    return DDPMLatent(unet, str(name_or_path), scheduler=scheduler, steps=steps, eta=eta,
                      intervene_below=DEFAULT_INTERVENE_BELOW if intervene_below is None else int(intervene_below),
                      class_idx=class_idx, num_train_timesteps=train_steps, info={"unet_folder": str(folder)},
                      intervene_below_given=intervene_below is not None)


@dataclass(frozen=True)
class Sampling:
    """DDPM sampling options of a command (ignored for StyleGAN2)."""

    scheduler: str = "ddim"  # ddim | ddpm
    steps: int | None = None  # None: 50 for DDIM, 1000 for DDPM
    eta: float = 0.0  # DDIM eta
    intervene_below: int | None = None  # None: the bottleneck's recommendation, else 400

    def kwargs(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler, "steps": self.steps, "eta": self.eta, "intervene_below": self.intervene_below}

