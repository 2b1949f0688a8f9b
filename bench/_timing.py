"""The benchmarks' timer: one warm-up call, then the median wall time of `repeats` calls (seconds)."""

from __future__ import annotations

import statistics
import time


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
