"""Time make_plate: python -m synth.bench [--count N] [--scale F] [--shifted] [--seed S]"""
from __future__ import annotations

import argparse
import time

import numpy as np

from .plate import make_plate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--shifted", action="store_true")
    a = ap.parse_args(argv)
    make_plate(0, scale=a.scale, shifted=a.shifted)   # build the cached texture banks once
    ms, px = [], 0
    for s in range(a.seed, a.seed + a.count):
        t = time.perf_counter()
        p = make_plate(s, scale=a.scale, shifted=a.shifted)
        ms.append((time.perf_counter() - t) * 1e3)
        px += p.stored.size
    ms = np.array(ms)
    print(f"make_plate scale={a.scale} shifted={a.shifted}: mean {ms.mean():.1f} ms, median "
          f"{np.median(ms):.1f}, p90 {np.percentile(ms, 90):.1f}, max {ms.max():.0f} ms per plate; "
          f"mean {px / a.count / 1e6:.2f} Mpx")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
