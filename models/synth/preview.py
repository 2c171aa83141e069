"""Write PNG previews of plates (image | image with artifact-mask outlines in red).

    python -m synth.preview --out DIR [--count N] [--seed S] [--scale F] [--shifted]
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from ._png import write_png
from .plate import make_plate

_COLOURS = np.array([[255, 0, 0], [0, 200, 255], [255, 200, 0]], np.uint8)


def preview(p) -> np.ndarray:
    rgb = np.repeat((np.clip(p.brightness, 0, 1)[..., None] * 255).astype(np.uint8), 3, axis=2)
    ov = rgb.copy()
    for i, a in enumerate(p.artifacts):
        m = p.masks[a["type"]]
        pad = np.pad(m, 1)
        edge = m & ~(pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:])
        ov[edge] = _COLOURS[i % len(_COLOURS)]
    gap = np.zeros((rgb.shape[0], 4, 3), np.uint8)
    return np.concatenate([rgb, gap, ov], axis=1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=float, default=0.5)
    ap.add_argument("--shifted", action="store_true")
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    for s in range(a.seed, a.seed + a.count):
        p = make_plate(s, scale=a.scale, shifted=a.shifted)
        arts = "+".join(f"{x['type']}{x['severity']}" for x in p.artifacts) or "clean"
        name = f"plate_{s:06d}_{'usable' if p.usable else 'unusable'}_{arts}.png"
        write_png(os.path.join(a.out, name), preview(p))
        print(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
