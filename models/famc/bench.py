"""Time family C: python -m famc.bench [--count N] [--seed S] [--scale F] [--shifted]
Prints ms per make_pair (plate + clean twin) and per make_plate."""
from __future__ import annotations

import argparse
import time

import numpy as np

from .plate import make_pair


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--shifted", action="store_true")
    a = ap.parse_args(argv)
    make_pair(0, scale=a.scale, shifted=a.shifted)     # warm-up
    res = {}
    for twin in (True, False):
        ms, px = [], 0
        for s in range(a.seed, a.seed + a.count):
            t = time.perf_counter()
            p, _ = make_pair(s, scale=a.scale, shifted=a.shifted, twin=twin)
            ms.append((time.perf_counter() - t) * 1e3)
            px += p.stored.size
        res[twin] = (np.array(ms), px / a.count / 1e6)
    for twin, name in ((True, "make_pair (plate+twin)"), (False, "make_plate")):
        ms, mpx = res[twin]
        print(f"{name}: mean {ms.mean():.1f} ms, median {np.median(ms):.1f}, "
              f"p90 {np.percentile(ms, 90):.1f}, max {ms.max():.0f} ms; mean {mpx:.3f} Mpx "
              f"(count {a.count}, scale {a.scale}, shifted {a.shifted})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
