"""The toyfaces DDPM training script: a few steps make a UNet folder every --gen accepts."""

from __future__ import annotations

import json

import torch

from engine.toyfaces.train_ddpm import UNET_CONFIG, main, world_batch


def test_world_batches_are_faces_in_range():
    from engine.toyfaces.world import World

    x = world_batch(World(), 3, torch.Generator().manual_seed(0))
    assert x.shape == (3, 3, 32, 32) and float(x.min()) >= -1 and float(x.max()) <= 1


def test_a_few_steps_write_a_loadable_unet_folder_and_continue(tmp_path, capsys):
    out = tmp_path / "toy-ddpm"
    assert main(["--out", str(out), "--steps", "2", "--batch-size", "2", "--save-every", "1", "--threads", "1"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["steps"] == 2
    assert {p.name for p in out.iterdir()} == {"config.json", "diffusion_pytorch_model.safetensors", "gencbm_training.json"}
    assert not (tmp_path / "toy-ddpm.tmp").exists() and not (tmp_path / "toy-ddpm.old").exists()
    from engine.generators.latent import open_generator

    lg = open_generator(str(out), steps=2)
    assert lg.family == "ddpm" and lg.latent_shape == (UNET_CONFIG["block_out_channels"][-1], 8, 8)
    with torch.no_grad():
        img = lg.render(lg.z_from_seeds([0]))
    assert img.shape == (1, 3, 32, 32) and bool(torch.isfinite(img).all())
    assert main(["--out", str(out), "--steps", "1", "--batch-size", "2", "--init-from", str(out), "--threads", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 3
