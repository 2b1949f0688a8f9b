"""Speed of one train-cbae / train-cc step on toyfaces, against the generator work it cannot avoid.

A CB-AE step runs, by the method's definition: one no-grad g1 + g2 + pseudo-labeler pass, a g2
forward+backward for the image-reconstruction loss, and a g2 + pseudo-labeler forward+backward for
the intervention loss; a CC step only the no-grad pass. This script times
  plain   : one forward+backward of the generator (g1 + g2, gradient to the latent) at batch B,
  needed  : the generator and pseudo-labeler passes a step must make (listed above), without any
            bottleneck arithmetic,
  step    : engine.train.bottleneck.train_step, the real thing,
and reports step / plain and the bottleneck's own overhead (step - needed) / needed.

    python bench/bench_bottleneck.py [--batch 32] [--repeats 5] [--threads 2] [--kind cbae|cc]
Run it on an idle machine; the median of --repeats is printed (seconds).
"""

from __future__ import annotations

import argparse
import json

import torch
from _timing import median_time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kind", choices=("cbae", "cc"), default="cbae")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from engine.bottleneck.io import build
    from engine.bottleneck.spec import ConceptSpec
    from engine.generators.latent import open_generator
    from engine.pseudolabel.supervised import load_supervised
    from engine.toyfaces.world import CONCEPTS
    from engine.train.bottleneck import train_step

    lg = open_generator("toyfaces")
    labeler = load_supervised("toyfaces-pseudo", list(CONCEPTS))
    spec = ConceptSpec.binary(labeler.concepts, unknown=32 if args.kind == "cbae" else 0)
    model = build(args.kind, spec, lg.w_dim, lg.num_ws).train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.99))
    opt_int = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.99)) if args.kind == "cbae" else None
    zgen = torch.Generator().manual_seed(0)
    B = args.batch

    def plain():
        z = lg.sample_z(B, zgen)
        w = lg.g1(z).detach().requires_grad_(True)
        lg.g2(w).square().mean().backward()

    def needed():
        z = lg.sample_z(B, zgen)
        with torch.no_grad():
            w = lg.g1(z)
            x = lg.g2(w)
            labeler.label(x)
        if args.kind == "cbae":  # a CC step needs only the no-grad pass above
            w1 = w.clone().requires_grad_(True)
            (lg.g2(w1) - x).square().mean().backward()
            w2 = w.clone().requires_grad_(True)
            sum(lg_.float().mean() for lg_ in labeler.logits(lg.g2(w2))).backward()

    def step():
        train_step(model, lg, labeler, opt, opt_int, zgen, B, 0.9)

    t_plain = median_time(plain, args.repeats)
    t_needed = median_time(needed, args.repeats)
    t_step = median_time(step, args.repeats)
    print(json.dumps({
        "kind": args.kind, "batch": B, "threads": args.threads,
        "plain_forward_backward_s": round(t_plain, 4), "generator_and_labeler_work_s": round(t_needed, 4), "step_s": round(t_step, 4),
        "step_over_plain": round(t_step / t_plain, 3), "bottleneck_overhead": round((t_step - t_needed) / t_needed, 3),
    }, indent=1))


if __name__ == "__main__":
    main()
