"""PNG previews of family-B plates: image | image with artifact-mask outlines and the
diagnostic region's outline.

    python -m famb.preview --out DIR [--count N] [--seed S] [--artifact TYPE --severity K]
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from synth._png import write_png

from .plate import make_plate

_COLOURS = np.array([[255, 40, 40], [40, 200, 255], [255, 200, 0]], np.uint8)


def _edge(m):
    p = np.pad(m, 1)
    return m & ~(p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:])


def preview(p) -> np.ndarray:
    g = (np.clip(p.brightness, 0, 1) * 255 + 0.5).astype(np.uint8)
    rgb = np.repeat(g[..., None], 3, axis=2)
    ov = rgb.copy()
    ov[_edge(p.diagnostic_mask)] = (60, 220, 60)
    for i, a in enumerate(p.artifacts):
        ov[_edge(p.masks[a["type"]])] = _COLOURS[i % len(_COLOURS)]
    gap = np.full((rgb.shape[0], 4, 3), 128, np.uint8)
    return np.concatenate([rgb, gap, ov], axis=1)


def name_of(p) -> str:
    arts = "-".join(f"{a['type']}{a['severity']}" for a in p.artifacts) or "clean"
    return (f"{p.seed:06d}_{'U' if p.usable else 'X'}_{p.view[:2]}_{p.info['region'][:3]}_"
            f"{p.info['processing']}_{arts}.png")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--artifact", default=None, help="render this type on every plate")
    ap.add_argument("--severity", type=int, default=2)
    ap.add_argument("--placement", default="diag")
    ap.add_argument("--clean", action="store_true", help="no artifacts")
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    for s in range(a.seed, a.seed + a.count):
        arts = None
        if a.clean:
            arts = []
        elif a.artifact:
            arts = [{"type": a.artifact, "severity": a.severity, "placement": a.placement}]
        p = make_plate(s, artifacts=arts)
        path = os.path.join(a.out, name_of(p))
        write_png(path, preview(p))
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
