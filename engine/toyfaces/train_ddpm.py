"""Train the toyfaces DDPM: a small diffusers UNet2DModel learns the toyfaces world's faces (32 px).

The standard DDPM objective (Ho et al. 2020): for a rendered face x0 (a fresh z of the world per
sample, so the data never repeats), t ~ U{0..999}, noise e ~ N(0, I), x_t = DDPMScheduler.add_noise
(x0, e, t) with diffusers' default linear schedule, minimise MSE(unet(x_t, t), e). AdamW with a
short warm-up; the saved weights are an exponential moving average. The output is an ordinary
diffusers UNet folder (config.json + diffusion_pytorch_model.safetensors) that `--gen` accepts.

Reproduce: python -m engine.toyfaces.train_ddpm --seed 0 --minutes 150 --out toyfaces-ddpm
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

RESOLUTION = 32

# Three levels (32, 16, 8 px), attention at 16 px, mid-block latent [64, 8, 8]; 0.65 M parameters (2.6 MB),
# about 1.1 s per batch of 32 on one CPU core.
UNET_CONFIG = dict(
    sample_size=RESOLUTION, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32, 64),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8, attention_head_dim=16,
)


def build_toy_unet(seed: int = 0):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(**UNET_CONFIG)


def world_batch(world, n: int, gen: torch.Generator) -> torch.Tensor:
    """n fresh faces [n, 3, 32, 32] in [-1, 1] from the world's prior."""
    from engine.toyfaces.renderer import render

    z = torch.randn(n, world.z_dim, generator=gen)
    concepts, nuisances = world.factors(z)
    return render(concepts, nuisances, RESOLUTION)


def save_unet_folder(unet, out: Path, meta: dict) -> None:
    """Write the UNet folder atomically: into a temporary sibling, then renamed over `out`."""
    import shutil

    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    unet.save_pretrained(str(tmp), safe_serialization=True)
    (tmp / "gencbm_training.json").write_text(json.dumps(meta, indent=1) + "\n")
    old = out.with_name(out.name + ".old")
    if out.exists():
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
    tmp.rename(out)
    if old.exists():
        shutil.rmtree(old)


def train(out: Path, *, seed: int = 0, steps: int = 100_000, minutes: float | None = None, batch_size: int = 32,
          lr: float = 3e-4, ema: float = 0.999, warmup: int = 200, save_every: int = 250, log=print,
          init_from: Path | None = None) -> dict:
    from diffusers import DDPMScheduler

    from engine.toyfaces.world import World

    world = World()
    unet = build_toy_unet(seed).train()
    done_before = 0
    if init_from is not None:  # continue from saved (EMA) weights, e.g. a previous run's folder
        from diffusers import UNet2DModel

        start = UNet2DModel.from_pretrained(str(init_from), local_files_only=True, low_cpu_mem_usage=False)
        unet.load_state_dict(start.state_dict())
        info_file = Path(init_from) / "gencbm_training.json"
        if info_file.is_file():
            done_before = int(json.loads(info_file.read_text()).get("steps", 0))
    ema_unet = copy.deepcopy(unet).eval().requires_grad_(False)
    sched = DDPMScheduler(num_train_timesteps=1000)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    step = 0
    losses: list[float] = []
    meta: dict = {}
    while step < steps and (minutes is None or time.time() - t0 < minutes * 60):
        x0 = world_batch(world, batch_size, gen)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 1000, (batch_size,), generator=gen)
        x_t = sched.add_noise(x0, noise, t)
        loss = F.mse_loss(unet(x_t, t).sample, noise)
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / warmup)  # a continued run warms its fresh optimiser up again
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(ema, (1 + step + done_before) / (10 + step + done_before))
            for pe, p in zip(ema_unet.parameters(), unet.parameters()):
                pe.lerp_(p, 1 - decay)
        step += 1
        losses.append(float(loss.detach()))
        if step % 50 == 0:
            log(f"step {step} loss {sum(losses[-50:]) / 50:.4f} {time.time() - t0:.0f}s")
        if step % save_every == 0:
            meta = {"steps": done_before + step, "seconds": round(time.time() - t0, 1), "batch_size": batch_size, "lr": lr, "ema": ema,
                    "seed": seed, "loss_last_500": round(sum(losses[-500:]) / len(losses[-500:]), 5),
                    "command": f"python -m engine.toyfaces.train_ddpm --seed {seed} --out {out.name}"}
            save_unet_folder(ema_unet, out, meta)
    meta = {"steps": done_before + step, "seconds": round(time.time() - t0, 1), "batch_size": batch_size, "lr": lr, "ema": ema, "seed": seed,
            "loss_last_500": round(sum(losses[-500:]) / max(1, len(losses[-500:])), 5),
            "command": f"python -m engine.toyfaces.train_ddpm --seed {seed} --out {out.name}"}
    save_unet_folder(ema_unet, out, meta)
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="UNet folder to write (replaced atomically at each save)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=100_000, help="optimisation steps at most")
    ap.add_argument("--minutes", type=float, default=None, help="stop after this much wall time")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--save-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--init-from", type=Path, default=None, help="start from the weights of a UNet folder (continue a run)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    meta = train(a.out, seed=a.seed, steps=a.steps, minutes=a.minutes, batch_size=a.batch_size, lr=a.lr, ema=a.ema,
                 save_every=a.save_every, log=lambda m: print(m, file=sys.stderr, flush=True), init_from=a.init_from)
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
