"""CPU benchmark of the StyleGAN2 generator at the CelebA-HQ-256 shape, for both modulated-convolution paths.

Measures, with random weights (speed does not depend on the values):
- generation throughput (images/s) of mapping + synthesis under torch.no_grad in eval mode, per batch size;
- the time of one forward + backward pass through the synthesis network (gradients with respect to
  ws and every parameter), as CB-AE training needs it.

Paths:
- grouped: fused_modconv=True for every batch, a per-sample grouped convolution (how NVIDIA's
  reference runs);
- auto:    the default, which on CPU modulates activations (one shared-weight convolution) when the
  batch has more than one sample, and uses the grouped convolution for a single sample.

Baseline "as NVIDIA's reference runs": --paths grouped --allocator default. gencbm's default:
--paths auto --allocator tuned.

Each measurement runs once to warm up, then `--repeats` times; the median is reported.

    .venv/bin/python bench/bench_stylegan2.py
    .venv/bin/python bench/bench_stylegan2.py --batch-sizes 1 8 --repeats 3 --threads 2 --json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from engine.generators.stylegan2 import Generator  # noqa: E402

PATHS = {"grouped": True, "auto": None}  # name -> fused_modconv argument


def build_generator(resolution: int, seed: int) -> Generator:
    """CelebA-HQ-256-shaped StyleGAN2 (z = w = 512, 8 mapping layers, channel_base 16384, channel_max 512)."""
    torch.manual_seed(seed)
    g = Generator(
        z_dim=512,
        c_dim=0,
        w_dim=512,
        img_resolution=resolution,
        img_channels=3,
        channel_base=16384,
        channel_max=512,
        mapping_kwargs=dict(num_layers=8),
    )
    return g.eval().requires_grad_(False)


def time_median(fn: Callable[[], None], repeats: int, warmup: int = 1) -> dict:
    """Wall times of fn over `repeats` runs after `warmup` untimed runs (seconds), and their median.

    Also the process CPU time of each run: on an otherwise idle machine it is about threads x wall;
    much less means other processes took the cores and the wall times are inflated.
    """
    for _ in range(warmup):
        fn()
    times, cpu = [], []
    for _ in range(repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"seconds_median": statistics.median(times), "seconds": times, "cpu_seconds": cpu}


def bench_generation(g: Generator, batch: int, fused: bool | None, repeats: int) -> dict:
    z = torch.randn([batch, g.z_dim], generator=torch.Generator().manual_seed(batch))

    def run() -> None:
        with torch.no_grad():
            img = g(z, None, noise_mode="const", fused_modconv=fused)
        assert img.shape == (batch, g.img_channels, g.img_resolution, g.img_resolution)

    t = time_median(run, repeats)
    return {"batch": batch, **t, "images_per_s": batch / t["seconds_median"]}


def bench_backward(g: Generator, batch: int, fused: bool | None, repeats: int) -> dict:
    g.requires_grad_(True)
    with torch.no_grad():
        ws0 = g.mapping(torch.randn([batch, g.z_dim], generator=torch.Generator().manual_seed(100 + batch)), None)
    probe = torch.randn([batch, g.img_channels, g.img_resolution, g.img_resolution], generator=torch.Generator().manual_seed(7))
    params = [p for p in g.synthesis.parameters()]

    def run() -> None:
        ws = ws0.clone().requires_grad_(True)
        img = g.synthesis(ws, noise_mode="const", fused_modconv=fused)
        grads = torch.autograd.grad((img * probe).sum(), [ws, *params])
        assert grads[0].shape == ws.shape

    try:
        t = time_median(run, repeats)
    finally:
        g.requires_grad_(False)
    return {"batch": batch, **t}


def render_table(results: dict) -> str:
    """The human-readable table of a results document (as printed by --json)."""
    names = list(results["generation"]) or list(results["backward"])
    ratio = "grouped" in names and "auto" in names
    lines = []
    header = f"{'measurement':<34}" + "".join(f"{n:>12}" for n in names) + (f"{'auto/grouped':>14}" if ratio else "")
    lines += [header, "-" * len(header)]
    batches = [r["batch"] for r in results["generation"][names[0]]] if results["generation"] else []
    for i, batch in enumerate(batches):
        vals = {n: results["generation"][n][i]["images_per_s"] for n in names}
        row = f"{f'generation images/s, batch {batch}':<34}" + "".join(f"{vals[n]:>12.3f}" for n in names)
        if ratio:
            row += f"{vals['auto'] / vals['grouped']:>13.2f}x"
        lines.append(row)
    if results["backward"]:
        vals = {n: results["backward"][n]["seconds_median"] for n in names}
        batch = results["backward"][names[0]]["batch"]
        row = f"{f'synthesis fwd+bwd s, batch {batch}':<34}" + "".join(f"{vals[n]:>12.2f}" for n in names)
        if ratio:
            row += f"{vals['auto'] / vals['grouped']:>13.2f}x"
        lines.append(row)
    if ratio:
        lines.append("(auto/grouped: ratio of images/s for generation, of seconds for fwd+bwd; lower seconds is faster)")
    runs = [r for v in results["generation"].values() for r in v] + list(results["backward"].values())
    wall = sum(sum(r["seconds"]) for r in runs)
    cpu = sum(sum(r.get("cpu_seconds", [])) for r in runs)
    threads = results["info"]["threads"]
    if wall > 0 and cpu:
        lines.append(f"(CPU use while timing: {cpu / wall:.2f} cores of {threads} threads; well below {threads} means a busy machine)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="generation batch sizes (default: 1 8)")
    ap.add_argument("--backward-batch", type=int, default=4, help="batch of the synthesis forward+backward; 0 skips it (default: 4)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per measurement after one warm-up (default: 3)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads; default: torch's choice")
    ap.add_argument("--resolution", type=int, default=256, help="image resolution (default: 256 -> 14 ws)")
    ap.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS), help="modulated-convolution paths to time")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    ap.add_argument("--allocator", choices=["tuned", "default"], default="tuned",
                    help="tuned: raise glibc's mmap/trim thresholds as load_generator does (engine/cpu.py); "
                         "default: glibc as it comes (as NVIDIA's code runs)")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = ap.parse_args(argv)
    if args.allocator == "tuned":
        from engine.cpu import tune_allocator

        tune_allocator()
    if args.repeats < 1 or any(b < 1 for b in args.batch_sizes) or args.backward_batch < 0:
        ap.error("--repeats and --batch-sizes must be >= 1, --backward-batch >= 0")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    g = build_generator(args.resolution, args.seed)
    n_params = sum(p.numel() for p in g.parameters())
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "resolution": args.resolution,
        "num_ws": g.num_ws,
        "params": n_params,
        "repeats": args.repeats,
        "allocator": args.allocator,
    }
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    log(f"StyleGAN2 {args.resolution}px, {n_params / 1e6:.1f} M params, {g.num_ws} ws, {info['threads']} threads, torch {torch.__version__}")

    results: dict = {"info": info, "generation": {}, "backward": {}}
    for name in args.paths:
        fused = PATHS[name]
        results["generation"][name] = []
        for batch in args.batch_sizes:
            log(f"  generation  {name:8s} batch {batch} ...")
            results["generation"][name].append(bench_generation(g, batch, fused, args.repeats))
        if args.backward_batch:
            log(f"  fwd+bwd     {name:8s} batch {args.backward_batch} ...")
            results["backward"][name] = bench_backward(g, args.backward_batch, fused, args.repeats)

    if args.json:
        print(json.dumps(results, indent=2))
        return 0

    print(render_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
