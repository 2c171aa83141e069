"""Contact sheet of family D plates: python famd/preview.py [out.png] [first_seed] [n].

Each tile shows the plate as displayed (MONOCHROME2 brightness); with --masks the artifact masks
are tinted red and the diagnostic region's outline green."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from famd import make_pair  # noqa: E402
from synth._png import write_png  # noqa: E402

TILE = 300


def tile(p, masks_on):
    b = p.brightness
    h, w = b.shape
    k = max(1, int(np.ceil(max(h, w) / TILE)))
    b = b[::k, ::k]
    rgb = np.repeat((np.clip(b, 0, 1) * 255).astype(np.uint8)[..., None], 3, 2)
    if masks_on:
        for m in p.masks.values():
            mm = m[::k, ::k]
            if mm.mean() < 0.9:
                rgb[mm, 0] = 255
        d = p.diagnostic_mask[::k, ::k]
        e = d & ~(np.roll(d, 1, 0) & np.roll(d, -1, 0) & np.roll(d, 1, 1) & np.roll(d, -1, 1))
        rgb[e] = (0, 200, 0)
    out = np.full((TILE + 14, TILE, 3), 40, np.uint8)
    out[:rgb.shape[0], :rgb.shape[1]] = rgb
    # a bar under the tile: red = unusable, green = usable
    out[TILE + 4:TILE + 12, :] = (200, 30, 30) if not p.usable else (30, 170, 30)
    return out


def main(argv):
    masks_on = "--masks" in argv
    argv = [a for a in argv if a != "--masks"]
    out = argv[0] if argv else "famd_preview.png"
    s0 = int(argv[1]) if len(argv) > 1 else 0
    n = int(argv[2]) if len(argv) > 2 else 24
    tiles = []
    for s in range(s0, s0 + n):
        p, _ = make_pair(s, twin=False)
        tiles.append(tile(p, masks_on))
        arts = ",".join(f"{a['type']}{a['severity']}" for a in p.artifacts) or "clean"
        print(s, p.view, p.info["region"], p.info["jaw"], p.stored.shape, p.bits_stored,
              p.photometric, "usable" if p.usable else "UNUSABLE", arts)
    cols = 6
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i:i + cols], 1) for i in range(0, len(tiles), cols)]
    write_png(out, np.concatenate(rows, 0))
    print("wrote", out)


if __name__ == "__main__":
    main(sys.argv[1:])
