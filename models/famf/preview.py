"""Contact sheets: seeds 100-119 (/tmp/famf_sheet.png) and one scene with each artifact type at
severity 3 (/tmp/famf_types.png). Label: a bar under each tile, white = usable, black = unusable."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from famf import ARTIFACT_NAMES, make_plate   # noqa: E402
from synth._png import write_png               # noqa: E402

TILE = 300


def _tile(p):
    b = p.brightness
    s = TILE / max(b.shape)
    ys = np.minimum((np.arange(int(b.shape[0] * s)) / s).astype(int), b.shape[0] - 1)
    xs = np.minimum((np.arange(int(b.shape[1] * s)) / s).astype(int), b.shape[1] - 1)
    t = np.full((TILE + 12, TILE), 0.25, np.float32)
    t[:len(ys), :len(xs)] = b[ys][:, xs]
    t[TILE + 2:, :] = 1.0 if p.usable else 0.0
    return t


def sheet(plates, cols, path):
    rows = (len(plates) + cols - 1) // cols
    out = np.full((rows * (TILE + 16), cols * (TILE + 4)), 0.5, np.float32)
    for k, p in enumerate(plates):
        r, c = divmod(k, cols)
        out[r * (TILE + 16):r * (TILE + 16) + TILE + 12, c * (TILE + 4):c * (TILE + 4) + TILE] = _tile(p)
    write_png(path, out)


if __name__ == "__main__":
    plates = [make_plate(s) for s in range(100, 120)]
    for p in plates:
        print(p.seed, p.info["view"], p.info["region"], p.usable, [(a["type"], a["severity"]) for a in p.artifacts])
    sheet(plates, 5, "/tmp/famf_sheet.png")
    base = 7
    types = [make_plate(base, artifacts=[])] + [
        make_plate(base, artifacts=[dict(type=n, severity=3, placement="diag")]) for n in ARTIFACT_NAMES]
    sheet(types, 5, "/tmp/famf_types.png")
