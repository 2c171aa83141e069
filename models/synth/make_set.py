"""Write a synthetic data set: DICOM files, labels.jsonl and masks/*.npz.

    python -m synth.make_set --out DIR --count N --seed S [--shifted] [--syntaxes LIST] [--scale F]

Plate i uses seed `S * 1_000_003 + i` (so sets with different --seed do not overlap for
practical sizes).  Its transfer syntax is drawn (from the plate seed) among the syntaxes in LIST
that can carry its pixel format (JPEG baseline needs 8-bit, JPEG extended 12-bit, JPEG-LS and
JPEG lossless unsigned data), weighted so that every syntax gets about the same number of files;
explicit VR little endian when none fits.  Four consecutive plates share a synthetic
patient and study.  Same arguments -> byte-identical files.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from . import dicom_io
from .plate import make_plate

DEFAULT_SYNTAXES = ["explicit_le", "implicit_le", "deflated_le", "explicit_be", "rle", "jpegls",
                    "j2k_lossless", "j2k", "jpeg_baseline", "jpeg_extended", "jpeg_lossless_sv1"]


def plate_seed(set_seed: int, i: int) -> int:
    return int(set_seed) * 1_000_003 + int(i)


# share of nominal plates each syntax can carry (8-bit only, 12-bit only, unsigned only ...);
# syntaxes are drawn with weight 1/share among the compatible ones so that each ends up on
# roughly the same number of files
_SHARE = {"jpeg_baseline": 0.25, "jpeg_extended": 0.43, "jpeg_lossless_sv1": 0.95, "jpegls": 0.95}


def choose_syntax(plate, syntaxes: list[str], seed: int) -> str:
    ok = [t for t in syntaxes if dicom_io.compatible(t, plate)]
    if not ok:
        return "explicit_le"
    w = np.array([1.0 / _SHARE.get(t, 1.0) for t in ok])
    u = np.random.Generator(np.random.PCG64([int(seed), 0x5E1EC7])).random()
    return ok[int(np.searchsorted(np.cumsum(w) / w.sum(), u, side="right").clip(0, len(ok) - 1))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shifted", action="store_true")
    ap.add_argument("--syntaxes", default=None,
                    help="comma-separated names from: " + ",".join(dicom_io.SYNTAXES)
                    + " (default: all available here)")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--unusable-fraction", type=float, default=0.5)
    ap.add_argument("--artifact-fraction", type=float, default=0.6)
    ap.add_argument("--start", type=int, default=0, help="first plate index (to split work)")
    a = ap.parse_args(argv)

    if a.syntaxes:
        syntaxes = [s.strip() for s in a.syntaxes.split(",") if s.strip()]
        bad = [s for s in syntaxes if s not in dicom_io.SYNTAXES]
        if bad:
            ap.error(f"unknown syntaxes: {bad}")
        missing = [s for s in syntaxes if not dicom_io.syntax_available(s)]
        if missing:
            ap.error(f"no encoder/decoder here for: {missing}")
    else:
        syntaxes = [s for s in DEFAULT_SYNTAXES if dicom_io.syntax_available(s)]

    os.makedirs(os.path.join(a.out, "masks"), exist_ok=True)
    t0 = time.perf_counter()
    mode = "a" if a.start else "w"
    with open(os.path.join(a.out, "labels.jsonl"), mode) as lab:
        for i in range(a.start, a.start + a.count):
            seed = plate_seed(a.seed, i)
            p = make_plate(seed, unusable_fraction=a.unusable_fraction,
                           artifact_fraction=a.artifact_fraction, shifted=a.shifted, scale=a.scale)
            name = f"{'shift' if a.shifted else 'synth'}_{a.seed}_{i:06d}"
            ts = choose_syntax(p, syntaxes, seed)
            ident = dicom_io.synthetic_identity(seed, patient_key=f"{a.seed}-{a.shifted}-{i // 4}")
            res = dicom_io.write_dicom(p, os.path.join(a.out, name + ".dcm"), transfer_syntax=ts,
                                       identity=ident)
            arrays = {f"artifact_{k}": v for k, v in p.masks.items()}
            arrays["diagnostic"] = p.diagnostic_mask
            np.savez_compressed(os.path.join(a.out, "masks", name + ".npz"), **arrays)
            rec = {
                "file": name + ".dcm", "seed": seed, "usable": p.usable,
                "label": "usable" if p.usable else "unusable",
                "artifacts": p.artifacts,
                "transfer_syntax": res["transfer_syntax"], "transfer_syntax_name": ts,
                "lossless": res["lossless"], "max_abs_err": res["max_abs_err"],
                "photometric": p.photometric, "bits": p.bits_stored,
                "pixel_representation": p.pixel_representation,
                "rows": int(p.stored.shape[0]), "columns": int(p.stored.shape[1]),
                "view": p.view, "plate_size": p.plate_size, "px_per_mm": round(p.px_per_mm, 4),
                "shifted": p.shifted, "sop_class": ident["SOPClassUID"],
                "patient_id": ident["PatientID"], "plate_id": ident["PlateID"],
                "masks": f"masks/{name}.npz",
            }
            lab.write(json.dumps(rec, sort_keys=True) + "\n")
    dt = time.perf_counter() - t0
    print(f"wrote {a.count} plates to {a.out} in {dt:.1f} s ({1000 * dt / max(1, a.count):.0f} ms/plate)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
