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
    ts, cpu, px = [], [], []
    for s in range(a.seed, a.seed + a.count):
        t0, c0 = time.perf_counter(), time.process_time()
        p = make_plate(s)
        ts.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        px.append(p.stored.size)
    ts, cpu = np.array(ts) * 1000, np.array(cpu) * 1000
    print(f"famb.bench: {a.count} plates, wall mean {ts.mean():.1f} ms (median "
          f"{np.median(ts):.1f}, p90 {np.percentile(ts, 90):.1f}, max {ts.max():.1f}); "
          f"CPU mean {cpu.mean():.1f} ms; mean {np.mean(px) / 1e6:.3f} Mpx")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
