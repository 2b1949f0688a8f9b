"""Speed of DDPM sampling through gencbm's split UNet, and what concept edits during sampling add.

It builds google/ddpm-celebahq-256's UNet2DModel (tests/ddpm_fixtures.CELEBAHQ_256) with random
weights (speed does not depend on the values; no download), about 113.7 M parameters, 256 px,
mid-block latent [512, 8, 8], and times DDIM sampling (eta 0, diffusers' DDIMScheduler defaults):

  plain     : DDPMLatent.render(z): diffusers' scheduler loop through gencbm's g1/g2 split;
  diffusers : diffusers' own DDIMPipeline on the same UNet and noise (ratio plain / diffusers,
              expected ~1.0; the images are compared too, they should agree to float rounding);
  reference : render with a CB-AE reconstruction D(E(h)) of the mid-block latent (reference_latent),
  swap      : render with a swap edit (concept 0 -> 1),
  optimize  : render with an optimize edit (eps 1.0, 50 signed-gradient steps: the original's
              DDPM defaults; --stop-at 1 by default, so no sample stops early, as in the original),
each edit at the steps with t <= --intervene-below (400: 21 of the 50 DDIM steps, t = 400, 380, ..., 0), with a random
8-concept binary CB-AE with 40 unknown dims on the flat latent (hidden 512, depth 3).

For every edited run it reports the wall time, its ratio to the plain sample, and the time spent
inside the edit calls themselves: on a shared machine the latter is the steadier measure of what an
edit adds, since the difference of two long runs also holds the machine's noise.

    python bench/bench_ddpm.py [--steps 50] [--batch 1] [--repeats N] [--device cpu|cuda] [--threads T] [--json]

Each measurement runs once untimed on a short warm-up (a 1-step sample; each edit once on a random
latent), then --repeats times (default 1 on CPU, where a 50-step sample takes minutes; 3 on CUDA);
the median wall time (time.perf_counter, CUDA synchronised) is reported. The default run makes five
50-step samples at 256 px: on 2 idle CPU cores about half an hour (a UNet step is ~6.5 s there), more
on a busy machine; --steps 10 (about a fifth of that) or --measure (a subset) shorten it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # engine and tests/ddpm_fixtures from the checkout
    sys.path.insert(0, str(ROOT))

MEASURES = ("diffusers", "reference", "swap", "optimize")
N_CONCEPTS = 8
UNKNOWN = 40


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, repeats: int, device: torch.device) -> tuple[float, list[float], object]:
    """Median seconds of `repeats` calls of fn (no warm-up here: the caller warms up), every time, the last result."""
    times, result = [], None
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        result = fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times), times, result


class TimedEdit:
    """An edit h -> h' that counts its calls and adds up the wall time spent in them."""

    def __init__(self, fn, device: torch.device):
        self.fn, self.device = fn, device
        self.calls, self.seconds = 0, 0.0

    def reset(self) -> None:
        self.calls, self.seconds = 0, 0.0

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        _sync(self.device)
        t = time.perf_counter()
        out = self.fn(h)
        _sync(self.device)
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50, the original's; fewer for a quick run)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 1 on CPU, 3 on CUDA)")
    ap.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when available, else cpu)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice, which follows OMP_NUM_THREADS)")
    ap.add_argument("--intervene-below", type=int, default=400, help="edits act at the steps with t <= this (default 400)")
    ap.add_argument("--eps", type=float, default=1.0, help="optimize: L-inf radius (default 1.0, the original's on DDPM)")
    ap.add_argument("--iters", type=int, default=50, help="optimize: signed-gradient steps (default 50)")
    ap.add_argument("--stop-at", type=float, default=1.0, help="optimize: stop a sample at this target probability (default 1: never, as the original)")
    ap.add_argument("--measure", nargs="*", choices=MEASURES, default=list(MEASURES),
                    help="what to time besides the plain sample (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    args = ap.parse_args()

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if device.type == "cuda" else 1)
    if repeats < 1 or args.batch < 1 or args.steps < 1:
        ap.error("--repeats, --batch and --steps must be at least 1")

    import diffusers
    from diffusers import DDIMPipeline
    from diffusers.utils import logging as diffusers_logging

    from engine.bottleneck.interventions import EditSettings, edit_latent, reference_latent
    from engine.bottleneck.io import build_for
    from engine.bottleneck.spec import ConceptSpec
    from engine.generators.ddpm import DDPMLatent
    from tests.ddpm_fixtures import CELEBAHQ_256

    diffusers_logging.set_verbosity_error()

    def log(msg: str) -> None:
        print(f"[bench_ddpm {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    torch.manual_seed(args.seed)
    unet = diffusers.UNet2DModel(**CELEBAHQ_256).requires_grad_(False).eval().to(device)
    lg = DDPMLatent(unet, "celebahq-256-random", scheduler="ddim", steps=args.steps, eta=0.0, intervene_below=args.intervene_below)
    seeds = list(range(args.seed, args.seed + args.batch))
    z = lg.z_from_seeds(seeds)
    sched = lg.new_scheduler()
    sched.set_timesteps(args.steps)
    edit_steps = sum(int(t) <= args.intervene_below for t in sched.timesteps)

    spec = ConceptSpec(names=tuple(f"concept{i}" for i in range(N_CONCEPTS)), sizes=(2,) * N_CONCEPTS, unknown=UNKNOWN)
    torch.manual_seed(args.seed + 1)
    model = build_for("cbae", spec, lg.latent_shape).to(device).eval()
    enc_calls = [0]
    enc = model.enc

    def counting_enc(latent):  # counts encoder passes (the optimize iterations actually run)
        enc_calls[0] += 1
        return enc(latent)

    model.enc = counting_enc
    settings = {"swap": EditSettings(method="swap", eps=args.eps),  # eps unused by swap, but checked
                "optimize": EditSettings(method="optimize", eps=args.eps, iters=args.iters, stop_at=args.stop_at)}
    edits = {
        "reference": TimedEdit(lambda h: reference_latent(model, h), device),
        "swap": TimedEdit(lambda h: edit_latent(model, h, [(0, 1)], settings["swap"]), device),
        "optimize": TimedEdit(lambda h: edit_latent(model, h, [(0, 1)], settings["optimize"]), device),
    }

    pipe = DDIMPipeline(unet=unet, scheduler=lg.new_scheduler())
    pipe.set_progress_bar_config(disable=True)

    def ours(edit=None, sampler=lg):
        return sampler.render(z, edit)

    def theirs(steps=args.steps):
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        return pipe(batch_size=args.batch, generator=gens, eta=0.0, num_inference_steps=steps, output_type="pt").images

    # warm-up: a 1-step sample each way, each edit once on a random latent
    log(f"{device}, {torch.get_num_threads()} threads, DDIM {args.steps} steps, batch {args.batch}, {repeats} repeat(s); warming up")
    ours(sampler=dataclasses.replace(lg, steps=1))
    if "diffusers" in args.measure:
        theirs(steps=1)
    h = torch.randn((args.batch, *lg.latent_shape), device=device)
    for name, e in edits.items():
        if name in args.measure:
            e(h)
            e.reset()
    enc_calls[0] = 0

    load = {"before": os.getloadavg()} if hasattr(os, "getloadavg") else {}
    results: dict[str, dict] = {}
    log("plain sample (DDPMLatent.render)")
    t_plain, times, img_plain = timed(ours, repeats, device)
    results["plain"] = {"seconds": t_plain, "runs": times, "seconds_per_step": t_plain / args.steps}
    log(f"plain: {t_plain:.2f} s")
    if "diffusers" in args.measure:
        log("diffusers DDIMPipeline")
        t, times, img = timed(theirs, repeats, device)
        diff = ((img_plain / 2 + 0.5).clamp(0, 1) - img.to(img_plain.device)).abs().max().item()
        results["diffusers"] = {"seconds": t, "runs": times, "ours_over_diffusers": t_plain / t, "max_abs_image_diff": diff}
        log(f"diffusers: {t:.2f} s (ours / diffusers {t_plain / t:.3f}; max |image diff| {diff:.2e})")
    for name, e in edits.items():
        if name not in args.measure:
            continue
        log(f"render with the {name} edit")
        e.reset()
        enc_calls[0] = 0
        t, times, _ = timed(lambda e=e: ours(e), repeats, device)
        row = {"seconds": t, "runs": times, "over_plain": t / t_plain, "edit_calls": e.calls // repeats,
               "in_edit_seconds": e.seconds / repeats, "in_edit_share_of_plain": e.seconds / repeats / t_plain,
               "encoder_passes_per_edit": enc_calls[0] / max(e.calls, 1)}
        if name == "optimize":  # through the decoder: two encoder passes per iteration, one for the final latent
            row["optimize_iterations_per_edit"] = (row["encoder_passes_per_edit"] - 1) / 2
        results[name] = row
        log(f"{name}: {t:.2f} s ({t / t_plain:.3f}x plain; {row['in_edit_seconds']:.2f} s inside {row['edit_calls']} edit calls)")
    if load:
        load["after"] = os.getloadavg()

    doc = {
        "unet": "google/ddpm-celebahq-256 architecture, random weights",
        "unet_params_M": round(sum(p.numel() for p in unet.parameters()) / 1e6, 1),
        "latent_shape": list(lg.latent_shape), "scheduler": "ddim", "eta": 0.0, "steps": args.steps, "batch": args.batch,
        "intervene_below": args.intervene_below, "edit_steps": edit_steps,
        "cbae": {"concepts": N_CONCEPTS, "unknown": UNKNOWN, "hidden": model.hidden, "depth": model.depth},
        "optimize": {"eps": args.eps, "iters": args.iters, "stop_at": args.stop_at},
        "device": str(device), "threads": torch.get_num_threads(), "repeats": repeats,
        "torch": torch.__version__, "diffusers": diffusers.__version__, "python": platform.python_version(),
        "cpu_count": os.cpu_count(), "loadavg": load, "date": time.strftime("%Y-%m-%d"),
        "results": {k: {kk: (round(vv, 4) if isinstance(vv, float) else [round(x, 3) for x in vv] if isinstance(vv, list) else vv)
                        for kk, vv in v.items()} for k, v in results.items()},
    }
    if args.json:
        print(json.dumps(doc, indent=1))
        return
    print(f"DDPM sampling: CelebA-HQ-256 UNet ({doc['unet_params_M']} M params, random weights), DDIM {args.steps} steps, "
          f"batch {args.batch}, {device}, {doc['threads']} threads, median of {repeats}")
    print(f"edits at {edit_steps} of {args.steps} steps (t <= {args.intervene_below}); CB-AE {N_CONCEPTS} concepts + {UNKNOWN} unknown "
          f"on {list(lg.latent_shape)}; optimize eps {args.eps}, {args.iters} iters, stop-at {args.stop_at}")
    print(f"{'measurement':<36}{'seconds':>10}{'ratio':>10}{'in edits s':>12}")
    print(f"{'plain sample (DDPMLatent.render)':<36}{t_plain:>10.2f}{1.0:>10.3f}{'':>12}   ({t_plain / args.steps:.2f} s a step)")
    if "diffusers" in results:
        r = results["diffusers"]
        print(f"{'diffusers DDIMPipeline':<36}{r['seconds']:>10.2f}{r['ours_over_diffusers']:>10.3f}{'':>12}   (ratio: ours / diffusers)")
    labels = {"reference": "+ CB-AE reconstruction", "swap": "+ swap edit", "optimize": "+ optimize edit"}
    for name in ("reference", "swap", "optimize"):
        if name in results:
            r = results[name]
            print(f"{labels[name]:<36}{r['seconds']:>10.2f}{r['over_plain']:>10.3f}{r['in_edit_seconds']:>12.3f}")
    if "diffusers" in results:
        print(f"max |image difference| ours vs diffusers: {results['diffusers']['max_abs_image_diff']:.2e}")
    if "optimize" in results:
        print(f"optimize iterations run per edit: {results['optimize']['optimize_iterations_per_edit']:.1f}")
    if load:
        print(f"load average before / after: {load['before'][0]:.2f} / {load['after'][0]:.2f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
