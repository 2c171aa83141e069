"""Time make_plate at native resolution (single process).

    python -m famb.bench [--count N] [--seed S]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from .plate import make_plate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1000)
    a = ap.parse_args(argv)
    ts, px = [], []
    for s in range(a.seed, a.seed + a.count):
        t0 = time.perf_counter()
        p = make_plate(s)
        ts.append(time.perf_counter() - t0)
        px.append(p.stored.size)
    ts = np.array(ts) * 1000
    print(f"famb.bench: {a.count} plates, mean {ts.mean():.1f} ms, median {np.median(ts):.1f}, "
          f"p90 {np.percentile(ts, 90):.1f}, max {ts.max():.1f}; mean {np.mean(px) / 1e6:.3f} Mpx")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
