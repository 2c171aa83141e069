"""Seconds per plate (twin included when present) on one core at default settings."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from famf import make_pair   # noqa: E402

if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    make_pair(0)
    t0 = time.perf_counter()
    twins = 0
    for s in range(1000, 1000 + n):
        p, t = make_pair(s)
        twins += t is not None
    dt = (time.perf_counter() - t0) / n
    print(f"{n} plates ({twins} with twin): {dt:.3f} s per plate")
