"""Throughput of `gencbm train-cbae` on toyfaces with 1 and with N processes under torchrun.

Each configuration runs the real command (`torchrun --standalone --nproc-per-node P --no-python
gencbm train-cbae --gen toyfaces ...`) twice, for S1 and for S2 > S1 steps, and takes the time per
step from the difference, so start-up (interpreter, model loading, process group) cancels out:

    step time = (t(S2) - t(S1)) / (S2 - S1);  images/s = P * batch / step time

--batch-size is per process, so P processes make P times the images of one per step. Scaling
efficiency = (images/s with P) / (P * images/s with 1). On a CPU, each process gets
--threads-per-proc threads (OMP_NUM_THREADS); on GPUs (--device cuda) one GPU per process.

    python bench/bench_ddp.py [--procs 1,2] [--batch 16] [--steps 10,30] [--threads-per-proc 1] [--device cpu] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(procs: int, steps: int, batch: int, threads: int, device: str, workdir: Path) -> float:
    gencbm = Path(sys.executable).with_name("gencbm")
    out = workdir / f"p{procs}-s{steps}.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}", "--no-python", str(gencbm),
           "train-cbae", "--gen", "toyfaces", "--steps", str(steps), "--batch-size", str(batch), "--sample-every", "0",
           "--checkpoint-every", str(steps), "--out", str(out), "--overwrite", "--device", device, "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"torchrun failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", default="1,2", help="process counts to compare, e.g. 1,2 (the first is the baseline)")
    ap.add_argument("--batch", type=int, default=16, help="batch size per process")
    ap.add_argument("--steps", default="10,30", help="the two step counts S1,S2")
    ap.add_argument("--threads-per-proc", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    procs = [int(p) for p in a.procs.split(",")]
    s1, s2 = (int(s) for s in a.steps.split(","))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for p in procs:
            t1 = run_once(p, s1, a.batch, a.threads_per_proc, a.device, Path(tmp))
            t2 = run_once(p, s2, a.batch, a.threads_per_proc, a.device, Path(tmp))
            step = (t2 - t1) / (s2 - s1)
            rows.append({"processes": p, "seconds_per_step": round(step, 4), "images_per_second": round(p * a.batch / step, 2),
                         "startup_seconds": round(t1 - s1 * step, 2)})
    base = rows[0]["images_per_second"] / rows[0]["processes"]
    for r in rows:
        r["speedup"] = round(r["images_per_second"] / rows[0]["images_per_second"], 3)
        r["efficiency"] = round(r["images_per_second"] / (r["processes"] * base), 3)
    doc = {"batch_per_process": a.batch, "steps": [s1, s2], "threads_per_process": a.threads_per_proc, "device": a.device, "rows": rows}
    if a.json:
        print(json.dumps(doc, indent=1))
        return
    print(f"train-cbae on toyfaces, batch {a.batch} per process, {a.threads_per_proc} thread(s) per process, {a.device}")
    print(f"{'procs':>5} {'s/step':>8} {'img/s':>8} {'speedup':>8} {'efficiency':>10} {'startup s':>9}")
    for r in rows:
        print(f"{r['processes']:>5} {r['seconds_per_step']:>8.3f} {r['images_per_second']:>8.1f} {r['speedup']:>8.2f} "
              f"{r['efficiency']:>10.2f} {r['startup_seconds']:>9.1f}")


if __name__ == "__main__":
    main()
