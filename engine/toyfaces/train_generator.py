"""Train the toyfaces generator: the engine's StyleGAN2 learns to draw the renderer's face for its z.

The toy generator is an ordinary gencbm StyleGAN2 whose latent z decides the ground-truth concepts
through the world's hidden map; it is trained by regression on (z, render(world(z))) pairs with
  L1(image) + 0.5 * L1(2x-downsampled image) + concept_weight * BCE(teacher(G(z)), concepts(z)),
where the teacher is a multi-label SmallCNN trained first on rendered images (kept apart from the
evaluation oracle). The shipped weights are an exponential moving average of G.

Reproduce: python -m engine.toyfaces.train_generator --seed 0 --steps N --out toyfaces-generator.safetensors
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from engine.classifiers.small_cnn import SmallCNN
from engine.generators.stylegan2 import Generator
from engine.toyfaces.renderer import render
from engine.toyfaces.world import CONCEPTS, World

RESOLUTION = 32


def build_toy_generator(seed: int = 0) -> Generator:
    """The toyfaces StyleGAN2: z 32, w 128, 32 px, 4 mapping layers at full learning rate."""
    torch.manual_seed(seed)
    return Generator(
        z_dim=32, c_dim=0, w_dim=128, img_resolution=RESOLUTION, img_channels=3,
        mapping_kwargs=dict(num_layers=4, lr_multiplier=1.0),
        channel_base=2048, channel_max=128, num_fp16_res=0, conv_clamp=None, architecture="skip",
    )


def train_teacher(world: World, steps: int, batch: int, seed: int, log=print) -> SmallCNN:
    """A multi-label concept classifier on rendered faces (used only as a training signal)."""
    gen = torch.Generator().manual_seed(seed + 1)
    net = SmallCNN(num_outputs=len(CONCEPTS), width=24)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for step in range(steps):
        z = torch.randn(batch, world.z_dim, generator=gen)
        c, n = world.factors(z)
        x = render(c, n, RESOLUTION)
        loss = F.binary_cross_entropy_with_logits(net(x), c.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log(json.dumps({"teacher_step": step, "bce": round(loss.item(), 4)}))
    return net.eval().requires_grad_(False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--teacher-steps", type=int, default=600)
    ap.add_argument("--concept-weight", type=float, default=0.1)
    ap.add_argument("--ema", type=float, default=0.998)
    ap.add_argument("--max-minutes", type=float, default=None, help="stop early after this long (checkpoint kept)")
    ap.add_argument("--stop-after", type=int, default=None, help="stop after this many steps of the --steps schedule (reproduces a run stopped by --max-minutes)")
    ap.add_argument("--checkpoint-every", type=int, default=250)
    ap.add_argument("--threads", default="auto", help="torch threads, or 'auto': 2 when the machine is idle, else 1")
    ap.add_argument("--init-from", type=Path, default=None, help="start from these generator weights (continue an earlier run)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    import os

    def set_threads() -> None:
        if args.threads == "auto":
            busy = os.getloadavg()[0] > 2.5
            torch.set_num_threads(1 if busy else min(2, os.cpu_count() or 1))
        else:
            torch.set_num_threads(int(args.threads))

    set_threads()

    from engine.generators import save_generator

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    world = World()
    t0 = time.time()
    teacher = train_teacher(world, args.teacher_steps, 64, args.seed, log)
    G = build_toy_generator(args.seed).train()
    if args.init_from is not None:
        from engine.generators import load_generator

        G.load_state_dict(load_generator(args.init_from, use_cache=False).state_dict())
        log(json.dumps({"init_from": str(args.init_from)}))
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt = torch.optim.Adam(G.parameters(), lr=args.lr, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(args.seed + 2)
    warmup = 200
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        z = torch.randn(args.batch_size, world.z_dim, generator=gen)
        c, n = world.factors(z)
        target = render(c, n, RESOLUTION)
        img = G(z, None, noise_mode="const")
        l1 = (img - target).abs().mean()
        l1_low = (F.avg_pool2d(img, 2) - F.avg_pool2d(target, 2)).abs().mean()
        concept = F.binary_cross_entropy_with_logits(teacher(img), c.float())
        loss = l1 + 0.5 * l1_low + args.concept_weight * concept
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            beta = min(args.ema, (1 + step) / (10 + step))
            for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                p_ema.lerp_(p, 1 - beta)
        if step % 100 == 0:
            set_threads()
        if step % 50 == 0 or step == args.steps - 1:
            log(json.dumps({"step": step, "lr": round(lr, 6), "l1": round(l1.item(), 4), "concept_bce": round(concept.item(), 4), "elapsed_min": round((time.time() - t0) / 60, 2)}))
        done = (step == args.steps - 1 or (args.max_minutes is not None and time.time() - t0 > args.max_minutes * 60)
                or (args.stop_after is not None and step + 1 >= args.stop_after))
        if (step + 1) % args.checkpoint_every == 0 or done:
            init = f" --init-from {args.init_from.name}" if args.init_from is not None else ""
            save_generator(G_ema, args.out, source=f"python -m engine.toyfaces.train_generator --seed {args.seed} --steps {args.steps} --stop-after {step + 1}{init}",
                           extra={"world": world.config.to_json(), "train_steps": step + 1})
        if done:
            break
    log(json.dumps({"finished_steps": step + 1, "minutes": round((time.time() - t0) / 60, 2), "out": str(args.out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
