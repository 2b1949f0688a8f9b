"""Evaluated samples per second for one steerability row on toyfaces (the built-in CB-AE and oracle).

    python bench/bench_evaluate.py [--samples 200] [--threads 2] [--concept Smiling] [--value 1]
Prints, per method (swap, optimize, interfacegan), samples/s for the row (boundary fitting for
interfacegan is timed apart, since it is cached after the first run).
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--concept", default="Smiling")
    ap.add_argument("--value", type=int, default=1)
    ap.add_argument("--cbae", default=None, help="CB-AE (default: the built-in toyfaces one)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import os
    import tempfile

    from engine.evaluate.steerability import SteerabilityConfig, evaluate_steerability

    os.environ["GENCBM_HOME"] = tempfile.mkdtemp(prefix="gencbm-bench-")  # a cold boundary cache
    out = {}
    for method in ("swap", "optimize", "interfacegan"):
        cfg = SteerabilityConfig(cbae=args.cbae, concepts=(args.concept,), values=(args.value,), method=method, samples=args.samples)
        if method == "interfacegan":
            t = time.perf_counter()
            evaluate_steerability(SteerabilityConfig(cbae=args.cbae, concepts=(args.concept,), values=(args.value,), method=method, samples=1))
            out["interfacegan_fit_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        doc = evaluate_steerability(cfg)
        dt = time.perf_counter() - t
        out[method] = {"samples_per_s": round(args.samples / dt, 1), "seconds": round(dt, 2), "steerability": doc["rows"][0]["steerability"]}
    print(json.dumps({"threads": args.threads, "samples": args.samples, "row": f"{args.concept}={args.value}", **out}, indent=1))


if __name__ == "__main__":
    main()
