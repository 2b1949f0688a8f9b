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


def build_world_mapping(G: Generator, world: World, sharpness: float = 50.0, seed: int = 0) -> None:
    """Set G's 4-layer mapping network so that it computes the world's hidden map, then mixes.

    fc0 computes, from the unit-RMS z, each concept's margin m_k (the world's rotation, correlation
    and threshold) twice, as a*m_k and a*m_k - 1 (a = `sharpness`), and each nuisance's rotated
    coordinate x_j as +x_j and -x_j. fc1 recombines those lrelu outputs into a clean indicator
    2*step(m_k) - 1 (a ramp of width 1/a around the threshold) and the linear x_j, and mixes these
    20 factors with a random matrix; fc2 and fc3 mix again with random square matrices. Every step
    is injective (lrelu is, the matrices have full column rank), so w holds exactly the world's
    factors, entangled: no w coordinate is a concept. Only the synthesis network is then trained.
    """
    m = G.mapping
    if m.num_layers != 4 or m.z_dim != world.z_dim or m.c_dim != 0:
        raise ValueError("build_world_mapping needs an unconditional 4-layer mapping with the world's z_dim")
    K, J = len(CONCEPTS), 12
    wd = m.w_dim
    if wd < 2 * K + 2 * J:
        raise ValueError(f"w_dim must be at least {2 * K + 2 * J}")
    gen = torch.Generator().manual_seed(seed + 12345)
    R = world.rotation.double()  # u = R z
    A = world.chol.double() @ R[:K]  # c = A z; margin = t - c
    W0 = torch.zeros(wd, m.z_dim, dtype=torch.float64)
    b0 = torch.zeros(wd, dtype=torch.float64)
    for k in range(K):
        W0[2 * k] = -sharpness * A[k]
        b0[2 * k] = sharpness * world.thresholds[k].double()
        W0[2 * k + 1] = -sharpness * A[k]
        b0[2 * k + 1] = sharpness * world.thresholds[k].double() - 1.0
    for j in range(J):
        W0[2 * K + 2 * j] = R[K + j]
        W0[2 * K + 2 * j + 1] = -R[K + j]
    # fc0 outputs h = sqrt(2) * lrelu(pre); factors f from h (a linear map G_ plus a constant g):
    #   step: lrelu(x) - lrelu(x - 1) is 0.2 below the ramp and 1 above: f = 2.5 * (h_p - h_q) / sqrt(2) - 1.5
    #   nuisance: lrelu(x) - lrelu(-x) = 1.2 x: f = (h_P - h_Q) / (1.2 sqrt(2))
    s2 = math.sqrt(2.0)
    Gm = torch.zeros(K + J, wd, dtype=torch.float64)
    g = torch.zeros(K + J, dtype=torch.float64)
    for k in range(K):
        Gm[k, 2 * k], Gm[k, 2 * k + 1], g[k] = 2.5 / s2, -2.5 / s2, -1.5
    for j in range(J):
        Gm[K + j, 2 * K + 2 * j], Gm[K + j, 2 * K + 2 * j + 1] = 1 / (1.2 * s2), -1 / (1.2 * s2)
    M1 = torch.randn(wd, K + J, generator=gen, dtype=torch.float64) / math.sqrt(K + J)
    W1, b1 = M1 @ Gm, M1 @ g
    layers = [(W0, b0), (W1, b1)]
    for _ in range(2):
        q, _r = torch.linalg.qr(torch.randn(wd, wd, generator=gen, dtype=torch.float64))
        layers.append((q * 0.8, torch.zeros(wd, dtype=torch.float64)))
    with torch.no_grad():
        for idx, (W, b) in enumerate(layers):
            fc = getattr(m, f"fc{idx}")
            fc.weight.copy_((W / fc.weight_gain).float())
            fc.bias.copy_((b / fc.bias_gain).float())
        if hasattr(m, "w_avg"):
            z = torch.randn(4096, m.z_dim, generator=gen)
            m.w_avg.copy_(m(z, None)[:, 0].mean(dim=0))
    m.requires_grad_(False)


def concept_pixel_weight(concepts: torch.Tensor, nuisances: torch.Tensor, size: int) -> torch.Tensor:
    """[B, 1, S, S] >= 0: for each concept, the pixels it decides (where the render changes when that
    concept alone is flipped), scaled by 0.05 / (their share of the image), summed over concepts.
    Thin details (glasses, eyebrows) cover few pixels, so a plain L1 loss can leave them out; this
    gives every concept about the same say in the loss whatever its size."""
    base = render(concepts, nuisances, size)
    total = torch.zeros(base.shape[0], 1, size, size)
    for k in range(concepts.shape[1]):
        flipped = concepts.clone()
        flipped[:, k] = 1 - flipped[:, k]
        mask = ((render(flipped, nuisances, size) - base).abs().amax(dim=1, keepdim=True) > 0.05).float()
        share = mask.mean(dim=(1, 2, 3), keepdim=True).clamp_min(0.01)
        total += mask * (0.05 / share)
    return total


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


def near_boundary(z: torch.Tensor, world: World, width: float, gen: torch.Generator) -> torch.Tensor:
    """Move each z so that one randomly chosen concept sits within +-width of its threshold.

    The hard part of drawing the world is the step at each threshold: a smooth fit blurs it, and
    Gaussian z rarely lands there. The move is the shortest one in u (along the concept's row of the
    Cholesky factor), so correlated concepts shift as they would under conditioning; two passes
    absorb the unit-RMS renormalisation."""
    b = z.shape[0]
    k = torch.randint(len(CONCEPTS), (b,), generator=gen)
    target = (torch.rand(b, generator=gen) * 2 - 1) * width
    rows = world.chol[k]  # [b, 8], unit norm (a correlation matrix's Cholesky rows)
    for _ in range(3):
        z = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        margin = world.concept_margins(z).gather(1, k[:, None])[:, 0]
        du = torch.zeros(b, world.z_dim)
        du[:, : len(CONCEPTS)] = (margin - target)[:, None] * rows
        z = z + du @ world.rotation
    return z


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--teacher-steps", type=int, default=600)
    ap.add_argument("--concept-weight", type=float, default=0.1)
    ap.add_argument("--ema", type=float, default=0.998)
    ap.add_argument("--mapping", choices=("learned", "world", "keep"), default="learned",
                    help="learned: train the mapping network too; world: build it from the world's hidden map (build_world_mapping) and train only the synthesis network; keep: keep --init-from's mapping frozen")
    ap.add_argument("--concept-pixel-weight", type=float, default=0.0,
                    help="extra L1 weight on the pixels a concept decides (concept_pixel_weight)")
    ap.add_argument("--sharpness", type=float, default=50.0, help="--mapping world: slope of the concept steps (width 1/sharpness in margin units)")
    ap.add_argument("--boundary-frac", type=float, default=0.0, help="share of each batch placed near a concept threshold")
    ap.add_argument("--boundary-width", type=float, default=0.2, help="half-width of that band, in margin units")
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
    if args.mapping == "world":
        build_world_mapping(G, world, sharpness=args.sharpness, seed=args.seed)
    elif args.mapping == "keep":
        G.mapping.requires_grad_(False)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt = torch.optim.Adam([p for p in G.parameters() if p.requires_grad], lr=args.lr, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(args.seed + 2)
    warmup = 200
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        z = torch.randn(args.batch_size, world.z_dim, generator=gen)
        nb = int(round(args.boundary_frac * args.batch_size))
        if nb:
            z = torch.cat([near_boundary(z[:nb], world, args.boundary_width, gen), z[nb:]])
        c, n = world.factors(z)
        target = render(c, n, RESOLUTION)
        img = G(z, None, noise_mode="const")
        if args.concept_pixel_weight > 0:
            weight = 1.0 + args.concept_pixel_weight * concept_pixel_weight(c, n, RESOLUTION)
            l1 = ((img - target).abs() * weight).mean() / weight.mean()
        else:
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
            extra_flags = "".join(f" --{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                                  if k in ("lr", "concept_weight", "ema", "teacher_steps", "boundary_frac", "boundary_width", "batch_size", "mapping", "sharpness", "concept_pixel_weight"))
            init = f" --init-from {args.init_from.name}" if args.init_from is not None else ""
            save_generator(G_ema, args.out, source=f"python -m engine.toyfaces.train_generator --seed {args.seed} --steps {args.steps} --stop-after {step + 1}{init}{extra_flags}",
                           extra={"world": world.config.to_json(), "train_steps": step + 1})
        if done:
            break
    log(json.dumps({"finished_steps": step + 1, "minutes": round((time.time() - t0) / 60, 2), "out": str(args.out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
