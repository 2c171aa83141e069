"""PNG previews: python -m famc.preview --out DIR --count N --seed S [--artifact T --severity K]
[--clean] [--shifted].  Each file shows the plate (as displayed, MONOCHROME2), its clean twin and
the artifact masks (red) over the diagnostic region (blue)."""
from __future__ import annotations

import argparse
import os

import numpy as np

from synth._png import write_png

from .plate import make_pair


def _rgb(g):
    g8 = (np.clip(g, 0, 1) * 255 + 0.5).astype(np.uint8)
    return np.stack([g8] * 3, -1)


def panel(p, tw):
    a = _rgb(p.brightness)
    parts = [a]
    if tw is not None:
        parts.append(_rgb(tw.brightness))
    ov = a.copy() // 2
    ov[..., 2] = np.where(p.diagnostic_mask, 160, ov[..., 2])
    for m in p.masks.values():
        ov[..., 0] = np.where(m, 255, ov[..., 0])
    parts.append(ov)
    sep = np.full((a.shape[0], 4, 3), 255, np.uint8)
    out = []
    for q in parts:
        out += [q, sep]
    return np.concatenate(out[:-1], 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--artifact")
    ap.add_argument("--severity", type=int, default=3)
    ap.add_argument("--placement", default="diag")
    ap.add_argument("--clean", action="store_true")
    ap.add_argument("--shifted", action="store_true")
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    arts = None
    if a.clean:
        arts = []
    elif a.artifact:
        arts = [dict(type=a.artifact, severity=a.severity, placement=a.placement)]
    for s in range(a.seed, a.seed + a.count):
        p, tw = make_pair(s, artifacts=arts, shifted=a.shifted)
        tag = "-".join(f"{x['type']}{x['severity']}" for x in p.artifacts) or "clean"
        name = f"famc_{s}_{p.view[:2]}_{tag}_{'ok' if p.usable else 'bad'}.png"
        write_png(os.path.join(a.out, name), panel(p, tw))
        print(name, p.stored.shape, p.bits_stored, p.photometric)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
