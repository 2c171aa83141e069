"""Seconds per plate over 50 seeds (one core): python famd/bench.py [n]."""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from famd import make_plate  # noqa: E402


def main(n=50):
    make_plate(10_000)   # warm-up (imports, first allocations)
    ts, px = [], []
    for s in range(n):
        t = time.perf_counter()
        p = make_plate(s)
        ts.append(time.perf_counter() - t)
        px.append(p.stored.size)
    print(f"famd: {sum(ts) / n:.3f} s/plate mean, {statistics.median(ts):.3f} median, "
          f"{max(ts):.3f} max over {n} seeds; median plate {statistics.median(px) / 1e6:.3f} Mpx")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
