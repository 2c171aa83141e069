"""Write a family-B evaluation set: DICOM files plus labels.csv.

    python -m famb.make_set --out DIR --count N --seed S [--syntaxes LIST] [--unusable-fraction F]

Family B is an out-of-family GATE: never train, select models or choose thresholds on it.

Plate i uses seed `S * 1_000_003 + i`.  Its transfer syntax is the least used so far among the
syntaxes in LIST that this environment can encode and that can carry the plate's pixel format
(JPEG baseline: 8-bit unsigned, JPEG extended: 12-bit unsigned, JPEG-LS and JPEG lossless:
unsigned), ties broken by the seed; explicit VR little endian when none fits.  Every file is
re-read and checked by `synth.dicom_io.write_dicom`.  "raw" (For Processing) plates are
written with the For Processing SOP class.  Same arguments -> same files.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import os
import sys
import time

from synth import dicom_io

from .plate import make_plate

DEFAULT_SYNTAXES = ["explicit_le", "implicit_le", "deflated_le", "explicit_be", "rle", "jpegls",
                    "j2k_lossless", "j2k", "jpeg_baseline", "jpeg_extended", "jpeg_lossless_sv1"]
COLUMNS = ["file", "seed", "usable", "artifacts", "syntax", "photometric", "bits", "signed",
           "processing", "view", "region", "plate_size", "px_per_mm", "rows", "cols"]


def plate_seed(set_seed: int, i: int) -> int:
    return int(set_seed) * 1_000_003 + int(i)


def artifacts_field(p) -> str:
    return ";".join(f"{a['type']}:{a['severity']}" for a in p.artifacts)


def choose_syntax(p, names, counts) -> str:
    fits = [n for n in names if dicom_io.compatible(n, p)]
    if not fits:
        return "explicit_le"
    h = hashlib.sha256(f"famb-syntax-{p.seed}".encode()).digest()
    return min(fits, key=lambda n: (counts.get(n, 0), hashlib.sha256(h + n.encode()).digest()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--syntaxes", default=",".join(DEFAULT_SYNTAXES),
                    help="comma-separated keys of synth.dicom_io.SYNTAXES")
    ap.add_argument("--unusable-fraction", type=float, default=0.5)
    ap.add_argument("--artifact-fraction", type=float, default=0.6)
    a = ap.parse_args(argv)
    names = [n.strip() for n in a.syntaxes.split(",") if n.strip()]
    for n in names:
        if n not in dicom_io.SYNTAXES:
            ap.error(f"unknown syntax {n!r}; known: {', '.join(dicom_io.SYNTAXES)}")
    usable_names = [n for n in names if dicom_io.syntax_available(n)]
    skipped = sorted(set(names) - set(usable_names))
    if skipped:
        print(f"famb.make_set: cannot encode {', '.join(skipped)} here; skipping them",
              file=sys.stderr)
    os.makedirs(a.out, exist_ok=True)
    counts: dict[str, int] = {}
    t0 = time.perf_counter()
    n_bad = 0
    with open(os.path.join(a.out, "labels.csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for i in range(a.count):
            seed = plate_seed(a.seed, i)
            p = make_plate(seed, unusable_fraction=a.unusable_fraction,
                           artifact_fraction=a.artifact_fraction)
            syn = choose_syntax(p, usable_names, counts)
            counts[syn] = counts.get(syn, 0) + 1
            sop = dicom_io.SOP_PROCESSING if p.info.get("for_processing") else \
                dicom_io.SOP_PRESENTATION
            ident = dicom_io.synthetic_identity(seed, f"famb-{a.seed}-{i // 4}", sop_class=sop)
            fname = f"famb_{i:06d}.dcm"
            dicom_io.write_dicom(p, os.path.join(a.out, fname), transfer_syntax=syn,
                                 identity=ident)
            n_bad += not p.usable
            w.writerow([fname, seed, int(p.usable), artifacts_field(p), syn, p.photometric,
                        p.bits_stored, p.pixel_representation, p.info["processing"], p.view,
                        p.info["region"], p.plate_size, f"{p.px_per_mm:.3f}",
                        p.stored.shape[0], p.stored.shape[1]])
    dt = time.perf_counter() - t0
    print(f"famb.make_set: {a.count} plates ({n_bad} unusable) in {dt:.1f} s "
          f"({1000 * dt / max(1, a.count):.0f} ms each) -> {a.out}; syntaxes: "
          + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
