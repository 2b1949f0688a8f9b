"""Small diffusers UNets for the DDPM tests (random weights, no download)."""

from __future__ import annotations

from pathlib import Path

import torch

# google/ddpm-celebahq-256's UNet2DModel configuration (its config.json), for exactness tests with random weights.
CELEBAHQ_256 = dict(
    sample_size=256, in_channels=3, out_channels=3, layers_per_block=2, block_out_channels=(128, 128, 256, 256, 512, 512),
    down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
    act_fn="silu", attention_head_dim=None, center_input_sample=False, downsample_padding=0, flip_sin_to_cos=False,
    freq_shift=1, mid_block_scale_factor=1, norm_eps=1e-6, norm_num_groups=32, time_embedding_type="positional",
)

# 16 px, two levels (one with attention): latent [32, 8, 8].
TINY = dict(
    sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8,
)


def tiny_unet(seed: int = 0, **overrides):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(**{**TINY, **overrides}).eval()


def save_unet(unet, folder: Path, *, pipeline: bool = False) -> Path:
    """Write `unet` as a diffusers UNet folder (config.json + safetensors), or as a pipeline folder with unet/."""
    folder = Path(folder)
    target = folder / "unet" if pipeline else folder
    unet.save_pretrained(str(target), safe_serialization=True)
    if pipeline:
        (folder / "model_index.json").write_text('{"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"], '
                                                  '"scheduler": ["diffusers", "DDPMScheduler"]}')
    return folder


def tiny_unet_folder(folder: Path, seed: int = 0, pipeline: bool = False, **overrides) -> Path:
    return save_unet(tiny_unet(seed, **overrides), folder, pipeline=pipeline)
