"""Speed of the toyfaces world on CPU: the renderer (images/s at 32 px) and the toy generator
(seconds for 64 images, the issue's target: under 2 s).

    .venv/bin/python bench/bench_toyfaces.py [--threads N] [--json]

The generator is the built-in `toyfaces` one when its weights are installed, else the same
architecture with random weights (speed does not depend on the values).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from _timing import median_time  # noqa: E402
from engine.toyfaces import World, render  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--render-batch", type=int, default=2000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    world = World()
    z = torch.randn(args.render_batch, world.z_dim, generator=torch.Generator().manual_seed(0))
    c, n = world.factors(z)
    t_render = median_time(lambda: render(c, n, 32), args.repeats)

    from engine.generators import load_generator
    from engine.generators.stylegan2 import z_from_seeds

    try:
        G = load_generator("toyfaces")
        which = "built-in toyfaces"
    except Exception:  # weights not installed: same architecture, random weights
        from engine.cpu import tune_allocator
        from engine.toyfaces.train_generator import build_toy_generator

        tune_allocator()
        G = build_toy_generator(0).eval().requires_grad_(False)
        which = "toyfaces architecture, random weights"
    z64 = z_from_seeds(range(64), G.z_dim)

    def gen64():
        with torch.no_grad():
            G(z64, None, noise_mode="const")

    t_gen = median_time(gen64, args.repeats)
    result = {
        "threads": torch.get_num_threads(),
        "render_images_per_s_32px": round(args.render_batch / t_render, 1),
        "generator": which,
        "generate_64_images_s": round(t_gen, 3),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:<28} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
