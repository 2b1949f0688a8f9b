"""A tiny StyleGAN2 generator for tests (8 px, w 16), saved like a real one."""

from __future__ import annotations

from pathlib import Path

import torch


def tiny_toy_generator(path: Path, seed: int = 0, world: bool = True) -> str:
    """Save a tiny random StyleGAN2 at `path` (with the toyfaces world's metadata unless world=False); returns the path."""
    from engine.generators import save_generator
    from engine.generators.stylegan2 import Generator
    from engine.toyfaces.world import WorldConfig

    torch.manual_seed(seed)
    G = Generator(z_dim=32, c_dim=0, w_dim=16, img_resolution=8, img_channels=3, mapping_kwargs=dict(num_layers=2),
                  channel_base=64, channel_max=16, num_fp16_res=0)
    return str(save_generator(G, Path(path), extra={"world": WorldConfig().to_json()} if world else None))
