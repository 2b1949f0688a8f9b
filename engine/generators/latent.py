"""One interface over generator families for the bottleneck code (DESIGN rule 2).

A latent generator samples z from seeds or a torch.Generator, names its latent shape, splits the
generator into g1 and g2, and renders images in [-1, 1] (NCHW float) with `render(z, edit=None)`,
where `edit(latent) -> latent` is applied wherever the family has its latent:
  StyleGAN2 (`StyleGAN2Latent`): g1 = mapping network (with truncation), latent = w
    [B, num_ws, w_dim]; g2 = synthesis; render = g2(edit(g1(z))).
  DDPM (`engine.generators.ddpm.DDPMLatent`): z = x_T; g1(x_t, t) = UNet up to the mid block,
    latent = its output [B, C, H, W]; g2 = the rest of the UNet; render = the scheduler's denoising
    loop with the edit at the steps t <= intervene_below.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch

from engine.errors import UsageError


@dataclass
class StyleGAN2Latent:
    G: torch.nn.Module  # a frozen engine.generators.stylegan2.Generator
    name: str  # what the user asked for (registry name or path)
    truncation_psi: float = 1.0  # 1: no truncation
    truncation_cutoff: int | None = None  # truncate only the first N ws; None: all
    noise_mode: str = "const"  # const keeps g2 deterministic (the image losses compare two g2 calls)
    class_idx: int | None = None  # class label for conditional generators

    family = "stylegan2"
    image_convention = "nvidia"

    def __post_init__(self):
        if self.G.c_dim > 0 and self.class_idx is None:
            raise UsageError(f"this generator is conditional ({self.G.c_dim} classes): pass --class K")
        if self.G.c_dim == 0 and self.class_idx is not None:
            raise UsageError("--class was given but this generator is unconditional")
        if self.class_idx is not None and not 0 <= self.class_idx < self.G.c_dim:
            raise UsageError(f"--class must be in 0..{self.G.c_dim - 1} (got {self.class_idx})")

    @property
    def device(self) -> torch.device:
        return next(self.G.parameters()).device

    @property
    def z_dim(self) -> int:
        return int(self.G.z_dim)

    @property
    def num_ws(self) -> int:
        return int(self.G.num_ws)

    @property
    def w_dim(self) -> int:
        return int(self.G.w_dim)

    @property
    def latent_shape(self) -> tuple[int, int]:
        return (self.num_ws, self.w_dim)

    @property
    def resolution(self) -> int:
        return int(self.G.img_resolution)

    @property
    def world(self):
        """The toyfaces World deciding this generator's ground truth, or None for other generators."""
        meta = (getattr(self.G, "gencbm_meta", None) or {}).get("world")
        if meta is None:
            return None
        from engine.toyfaces.world import World, WorldConfig

        return World(WorldConfig.from_json(meta))

    def z_from_seeds(self, seeds: Sequence[int]) -> torch.Tensor:  # [B, z_dim] on the device
        from engine.generators.stylegan2 import z_from_seeds

        return z_from_seeds(seeds, self.z_dim).to(self.device)

    def sample_z(self, n: int, generator: torch.Generator) -> torch.Tensor:  # [n, z_dim] on the device
        return torch.randn(n, self.z_dim, generator=generator).to(self.device)

    def _c(self, n: int) -> torch.Tensor | None:
        from engine.generators.stylegan2 import one_hot

        c = one_hot(self.class_idx, self.G.c_dim, n)
        return c.to(self.device) if c is not None else None

    def g1(self, z: torch.Tensor) -> torch.Tensor:  # [B, z_dim] -> w [B, num_ws, w_dim]
        return self.G.mapping(z, self._c(z.shape[0]), truncation_psi=self.truncation_psi, truncation_cutoff=self.truncation_cutoff)

    def g2(self, w: torch.Tensor) -> torch.Tensor:  # w [B, num_ws, w_dim] -> image [B, C, R, R] in [-1, 1]
        return self.G.synthesis(w, noise_mode=self.noise_mode)

    def render(self, z: torch.Tensor, edit=None, seeds: Sequence[int] | None = None, progress=None) -> torch.Tensor:
        """Images for z, with `edit(w) -> w'` applied to the latent when given (`seeds` is unused:
        StyleGAN2's only randomness past z is its noise inputs, const by default)."""
        with torch.no_grad():
            w = self.g1(z)
        if edit is not None:
            w = edit(w)
        with torch.no_grad():
            return self.g2(w.detach())

    def to_uint8(self, img: torch.Tensor):
        from engine.images import to_uint8

        return to_uint8(img)

    def describe(self) -> dict:
        return {"family": "stylegan2", "truncation_psi": self.truncation_psi, "noise_mode": self.noise_mode}


def open_generator(
    name_or_path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    truncation_psi: float = 1.0,
    truncation_cutoff: int | None = None,
    noise_mode: str = "const",
    class_idx: int | None = None,
    pickle_key: str = "G_ema",
    scheduler: str = "ddim",
    steps: int | None = None,
    eta: float = 0.0,
    intervene_below: int | None = None,
):
    """StyleGAN2Latent for a StyleGAN2 (pickle, safetensors, built-in), DDPMLatent for a diffusers
    UNet (folder, pipeline folder or a ddpm registry name); options of the other family are ignored."""
    from engine.generators import load_generator
    from engine.generators.ddpm import is_ddpm, open_ddpm

    if is_ddpm(name_or_path):
        return open_ddpm(name_or_path, device=device, scheduler=scheduler, steps=steps, eta=eta, class_idx=class_idx,
                         intervene_below=intervene_below)
    from engine.generators.stylegan2 import NOISE_MODES

    if noise_mode not in NOISE_MODES:
        raise UsageError(f"--noise-mode must be one of {', '.join(NOISE_MODES)} (got {noise_mode!r})")
    G = load_generator(name_or_path, device=device, pickle_key=pickle_key)
    return StyleGAN2Latent(G, str(name_or_path), truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                           noise_mode=noise_mode, class_idx=class_idx)


def generator_identity_of(name_or_path: str | os.PathLike):
    """GeneratorIdentity for checkpoint metadata; built-in toyfaces generators by their file's sha256,
    a DDPM by its weights file's sha256."""
    from engine.generators.ddpm import ddpm_identity, is_ddpm
    from engine.store.checkpoint import GeneratorIdentity, generator_identity
    from engine.toyfaces.builtin import builtin_generator

    if is_ddpm(name_or_path):
        return ddpm_identity(name_or_path)

    builtin = builtin_generator(str(name_or_path)) if not os.path.exists(str(name_or_path)) else None
    if builtin is not None:
        import hashlib

        return GeneratorIdentity(name=str(name_or_path).strip().lower(), sha256=hashlib.sha256(builtin.read_bytes()).hexdigest())
    return generator_identity(name_or_path)
