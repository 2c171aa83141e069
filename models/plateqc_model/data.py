"""Synthetic plate sets, preprocessed once and cached in models/work/cache/ (git-ignored).

A split is a list of plates made by ``synth.plate.make_plate(seed)`` with per-plate seeds
``split_seed * 1_000_000 + i``; each plate is preprocessed by plateqc_ref.preprocess (float64) and
stored as float16.  Generation is plain sequential code (no multiprocessing, so it is
reproducible); a split is built in shards, and separate shard commands may run side by side.

    python -m plateqc_model.data --split train --seed 1 --count 10000 [--start 0 --stop 5000]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]   # models/
WORK = HERE / "work"
CACHE = WORK / "cache"

from plateqc_ref import preprocess as pp

TYPE_NAMES = ["scratch", "bend", "bite_mark", "dust", "fingerprint", "peel", "fading",
              "delayed_scan", "scanner_lines", "cone_cut", "double_exposure", "motion",
              "reversed_plate", "brightness"]
LOCAL_FRACTION = 0.5   # an artifact mask covering less than this share of the plate is "local"
SHARD = 1000
_IMPORT_HASH: list = [None]   # hash of the generator sources when this process imported them
# The sources that decide what a cached plate is (pixels, labels, masks) and so make up the
# generator hash. The DICOM writer, the set builder and the tests are not among them: editing
# those leaves the cache valid.
DATA_SOURCES = ["synth/__init__.py", "synth/_util.py", "synth/anatomy.py", "synth/artifacts.py",
                "synth/display.py", "synth/labels.py", "synth/plate.py", "plateqc_ref/preprocess.py"]
TMASK = 32   # per-type masks are cached at TMASK x TMASK (any coverage), for dense supervision
# The training family a split is generated from: "a" = models/synth, "c" = models/famc (the
# second training family of plan-1.3.md round 5), "d" = models/famd (the third, round 7). Family B (models/famb) is never a choice here:
# it is only the gate. "e" = models/fame (round 10): not a renderer but anatomy randomisation over
# A, C and D (per scene one of them, with wide style overrides). "f" = models/famf (round 13): a
# projection of a 3-D jaw scene, the fifth, separately written training family.
# Set once per process, before the first `generator()` call (--family).
FAMILY = ["a"]
# famc's and famd's tools that do not decide what a plate is (left out of the generator hash)
_FAMC_NOT_DATA = {"bench.py", "preview.py", "make_set.py"}
_FAMILY_DIRS = {"c": "famc", "d": "famd", "e": "fame", "f": "famf"}
# the families family E wraps: their sources are part of E's hash
_FAME_WRAPS = ("a", "c", "d")


def family_sources(family: str) -> list[Path]:
    """The source files whose bytes make up a family's generator hash."""
    if family == "a":
        return [HERE / s for s in DATA_SOURCES]
    if family == "e":   # fame's own files, then every file of the families it wraps (once each)
        out = sorted(p for p in (HERE / _FAMILY_DIRS["e"]).glob("*.py")
                     if p.name not in _FAMC_NOT_DATA)
        for f in _FAME_WRAPS:
            out += [p for p in family_sources(f) if p not in out]
        return out
    if family in _FAMILY_DIRS:
        own = sorted(p for p in (HERE / _FAMILY_DIRS[family]).glob("*.py")
                     if p.name not in _FAMC_NOT_DATA)
        return own + [HERE / "synth/labels.py", HERE / "synth/artifacts.py",
                      HERE / "plateqc_ref/preprocess.py"]
    raise ValueError(f"unknown training family {family!r} (a, c, d, e or f)")


def generator():
    """(make_plate, ARTIFACT_TYPES, source files) of the training generator; the first call
    records the hash of its sources as this process imported them."""
    from synth.artifacts import ARTIFACT_TYPES
    if FAMILY[0] == "c":
        from famc import make_plate
    elif FAMILY[0] == "d":
        from famd import make_plate
    elif FAMILY[0] == "e":
        from fame import make_plate
    elif FAMILY[0] == "f":
        from famf import make_plate
    else:
        from synth.plate import make_plate
    srcs = family_sources(FAMILY[0])
    if _IMPORT_HASH[0] is None:
        _IMPORT_HASH[0] = "pending"
        _IMPORT_HASH[0] = data_hash({})
    return make_plate, ARTIFACT_TYPES, srcs


def generator_pair():
    """The family's make_pair (after `generator()` has recorded the source hash)."""
    generator()
    if FAMILY[0] == "c":
        from famc import make_pair
    elif FAMILY[0] == "d":
        from famd import make_pair
    elif FAMILY[0] == "e":
        from fame import make_pair
    elif FAMILY[0] == "f":
        from famf import make_pair
    else:
        from synth.plate import make_pair
    return make_pair


def artifact_types():
    try:
        from synth.artifacts import ARTIFACT_TYPES
    except ImportError:
        ARTIFACT_TYPES = generator()[1]
    return [dict(t) for t in ARTIFACT_TYPES]


def global_types() -> frozenset:
    try:
        from synth.artifacts import GLOBAL_TYPES
        return frozenset(GLOBAL_TYPES)
    except Exception:
        return frozenset({"fading", "delayed_scan", "brightness", "motion", "double_exposure",
                          "reversed_plate"})


def data_hash(settings: dict) -> str:
    """sha256 of the generator source files and the data settings."""
    _, _, srcs = generator()
    h = hashlib.sha256()
    for p in srcs:
        h.update(str(p.relative_to(HERE)).encode())
        h.update(p.read_bytes())
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


def split_dir(split: str, size: int, psp: str = pp.PSP_V1) -> Path:
    """Where a split is cached: one directory per preprocessing (v1 keeps its old name)."""
    suffix = "" if psp == pp.PSP_V1 else "-" + psp.rsplit("-", 1)[-1]
    return CACHE / f"{split}-s{size}{suffix}"


def shard_files(split: str, size: int, psp: str = pp.PSP_V1) -> list[Path]:
    """The finished shards of a cached split, in index order (not the .tmp.npz being written)."""
    d = split_dir(split, size, psp)
    return sorted(f for f in d.glob("[0-9]*-[0-9]*.npz") if not f.name.endswith(".tmp.npz"))


def split_generator_hash(split: str, size: int, psp: str = pp.PSP_V1) -> str:
    """The generator-source hash recorded in a cached split (all shards must agree)."""
    hs = set()
    for f in shard_files(split, size, psp):
        with np.load(f) as z:
            hs.add(str(z["gen_hash"][0]) if "gen_hash" in z.files else "unknown")
    if len(hs) != 1:
        raise RuntimeError(f"split {split}: shards made by different generator versions {hs}")
    return hs.pop()


def dataset_hash(gen_hash: str, settings: dict) -> str:
    """plateqc.data_hash: sha256 of the generator-source hash and the data settings."""
    return hashlib.sha256((gen_hash + json.dumps(settings, sort_keys=True)).encode()).hexdigest()


def plate_seed(split_seed: int, i: int) -> int:
    return int(split_seed) * 1_000_000 + int(i)


def local_union_mask(plate) -> np.ndarray | None:
    """Union of the masks of local artifacts (not synth.artifacts.GLOBAL_TYPES and covering less
    than LOCAL_FRACTION of the plate; native size), or None when there is none."""
    h, w = plate.stored.shape
    union = None
    for a in plate.artifacts:
        m = plate.masks.get(a["type"]) if plate.masks else None
        if m is None:
            continue
        if a["type"] in global_types():
            continue
        m = np.asarray(m, bool)
        if m.shape != (h, w) or not m.any() or m.mean() >= LOCAL_FRACTION:
            continue
        union = m.copy() if union is None else (union | m)
    return union


def type_masks(plate, size: int) -> np.ndarray:
    """Per-type masks in the letterboxed input frame, max-pooled to TMASK x TMASK and packed
    (types in TYPE_NAMES order; a global type's mask is its affected area)."""
    out = np.zeros((len(TYPE_NAMES), TMASK, TMASK), bool)
    f = size // TMASK
    for a in plate.artifacts:
        m = plate.masks.get(a["type"]) if plate.masks else None
        if m is None or not np.asarray(m).any():
            continue
        cov = pp.plate_mask_to_input(np.asarray(m, bool), size) > 0.0
        out[TYPE_NAMES.index(a["type"])] |= cov.reshape(TMASK, f, TMASK, f).any(axis=(1, 3))
    return np.packbits(out.reshape(-1))


def encode_plate(plate, size: int, psp: str = pp.PSP_V1) -> dict:
    """Preprocess a plate and its labels into one cache row (the shard arrays' keys)."""
    x, rect = pp.preprocess_plate(plate, size, psp)
    types = np.zeros(len(TYPE_NAMES), np.uint8)
    sev = np.zeros(len(TYPE_NAMES), np.float32)
    for a in plate.artifacts:
        k = TYPE_NAMES.index(a["type"])
        types[k] = 1
        sev[k] = max(sev[k], float(a.get("severity", 1) or 0))
    um = local_union_mask(plate)
    if um is None:
        m_s = np.zeros((size, size), bool)
    else:
        m_s = pp.plate_mask_to_input(um, size) > 0.0
    return {"x": x.astype(np.float16), "y": int(not plate.usable), "types": types, "sev": sev,
            "mask": np.packbits(m_s.reshape(-1)), "tmask": type_masks(plate, size), "rect": rect,
            "hw": plate.stored.shape}


ROW_KEYS = ("x", "y", "types", "sev", "mask", "tmask", "rect", "hw")


def build_shard(split: str, split_seed: int, start: int, stop: int, size: int, shifted: bool,
                unusable_fraction: float = 0.5, artifact_fraction: float = 0.6,
                twins: bool = False, psp: str = pp.PSP_V1) -> Path:
    """Plates start..stop-1 of a split; with `twins`, each plate that carries artifacts is
    followed by its clean counterfactual twin (same scene, noise and display chain); `pair`
    holds the plate index both rows came from, `twin` marks the twin rows."""
    make_pair = generator_pair()
    gen_hash = _IMPORT_HASH[0]   # generator sources as imported by this process
    out_dir = split_dir(split, size, psp)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{start:06d}-{stop:06d}.npz"
    if out.exists():
        return out
    rows, pair, twin, seeds = [], [], [], []
    t0 = time.time()
    for j in range(stop - start):
        seed = plate_seed(split_seed, start + j)
        plate, clean = make_pair(seed, unusable_fraction=unusable_fraction,
                                 artifact_fraction=artifact_fraction, shifted=shifted,
                                 twin=twins)
        for p, is_twin in ((plate, 0), (clean, 1)):
            if p is None:
                continue
            rows.append(encode_plate(p, size, psp))
            pair.append(start + j)
            twin.append(is_twin)
            seeds.append(seed)
        if (j + 1) % 200 == 0:
            print(f"{split} {start + j + 1}/{stop} {(time.time() - t0) / (j + 1):.3f}s/plate",
                  flush=True)
    arrays = {k: np.stack([np.asarray(r[k]) for r in rows]) for k in ROW_KEYS}
    arrays["x"] = arrays["x"].astype(np.float16)
    arrays["y"] = arrays["y"].astype(np.uint8)
    arrays["rect"] = arrays["rect"].astype(np.int32)
    arrays["hw"] = arrays["hw"].astype(np.int32)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, gen_hash=np.array([gen_hash] * len(rows)), **arrays,
             seeds=np.array(seeds, np.int64), pair=np.array(pair, np.int64),
             twin=np.array(twin, np.uint8), psp=np.array(psp))
    os.replace(tmp, out)
    return out


def restamp_split(split: str, split_seed: int, size: int, shifted: bool,
                  unusable_fraction: float = 0.5, artifact_fraction: float = 0.6,
                  psp: str = pp.PSP_V1) -> str:
    """Re-derive the first, middle and last plate of every cached shard with the current sources
    and, only if every array matches bit for bit, record the current generator hash in the
    shards. For when the hash changed but the data did not (a new hash definition, an edit to a
    comment)."""
    make_pair = generator_pair()
    gen_hash = _IMPORT_HASH[0]
    files = shard_files(split, size, psp)
    if not files:
        raise FileNotFoundError(f"no cached shards of {split}")
    shards = []
    for f in files:
        z = dict(np.load(f))
        n = len(z["y"])
        for j in sorted({0, n // 2, n - 1}):
            seed = int(z["seeds"][j])
            if seed // 1_000_000 != split_seed:
                raise SystemExit(f"{f.name}: plate {j} has seed {seed}, not of split seed "
                                 f"{split_seed}")
            is_twin = bool(z["twin"][j]) if "twin" in z else False
            pair = make_pair(seed, unusable_fraction=unusable_fraction,
                             artifact_fraction=artifact_fraction, shifted=shifted, twin=is_twin)
            plate = pair[1] if is_twin else pair[0]
            for k, v in encode_plate(plate, size, psp).items():
                if not np.array_equal(np.asarray(v), z[k][j]):
                    raise SystemExit(f"{f.name}: plate {j} (seed {seed}) differs in {k!r} from "
                                     f"what the current sources make; regenerate the split")
        shards.append((f, z))
    for f, z in shards:
        z["gen_hash"] = np.array([gen_hash] * len(z["y"]))
        tmp = f.with_name(f.name + ".tmp.npz")
        np.savez(tmp, **z)
        os.replace(tmp, f)
    return gen_hash


def _npy_header(f) -> tuple[tuple, bool, np.dtype]:
    """Shape, Fortran order and dtype from an .npy header at `f`'s position (left after it)."""
    major, _ = np.lib.format.read_magic(f)
    read = (np.lib.format.read_array_header_1_0 if major == 1
            else np.lib.format.read_array_header_2_0)
    return read(f)


def _npz_header(z, key: str) -> tuple[tuple, np.dtype]:
    """Shape and dtype of one array in an open .npz, read from its header alone."""
    with z.zip.open(key + ".npy") as f:
        shape, _, dtype = _npy_header(f)
    return shape, dtype


def npz_member_map(path: Path, key: str) -> np.memmap:
    """A read-only memory map of one array of an .npz shard, in place. `np.savez` stores its
    members uncompressed, so each is an .npy file lying whole inside the zip: its bytes start
    after the member's local header and the .npy header."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(key + ".npy")
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"{path}: {key} is compressed and cannot be mapped")
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            raise ValueError(f"{path}: no local zip header for {key}")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        shape, fortran, dtype = _npy_header(f)
        start = f.tell()
    return np.memmap(path, dtype=dtype, mode="r", offset=start, shape=shape,
                     order="F" if fortran else "C")


class MappedRows:
    """Rows of several shards' memory-mapped arrays, read as one array: `v[idx]` (an integer
    array, a slice or an int) gathers the rows from their shards in the order asked. Only what
    training and scoring read is offered (rows, length, shape, dtype)."""

    def __init__(self, parts: list[np.ndarray]):
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts])
        self.shape = (int(self.starts[-1]),) + tuple(parts[0].shape[1:])
        self.dtype = parts[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx):
        if isinstance(idx, (int, np.integer)):
            return self[np.array([idx])][0]
        if isinstance(idx, slice):
            idx = np.arange(len(self))[idx]
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError("row index out of range")
        idx = np.where(idx < 0, idx + len(self), idx)
        out = np.empty((len(idx),) + self.shape[1:], self.dtype)
        which = np.searchsorted(self.starts, idx, side="right") - 1
        for k in np.unique(which):
            sel = which == k
            out[sel] = self.parts[k][idx[sel] - self.starts[k]]
        return out


def load_split(split: str, size: int, count: int | None = None, psp: str = pp.PSP_V1,
               mmap: bool = False):
    """Concatenate the shards of a split (in index order). `split` may name several splits
    separated by commas (e.g. "train4,trainc5": two training families); they are concatenated
    in that order, `count` then counts over all of them, and their `pair` ids are kept apart.

    Each array is allocated once at its final size and filled shard by shard, so the peak is
    the result plus one shard (concatenating whole splits and then the splits needed about
    twice the result: five training families' 13 GB did not fit in 24 GB). With `mmap` the
    plates themselves (`x`) are not read but mapped in place (`MappedRows`): the five training
    families at 384 px are 29 GB (round 20); the page cache keeps what it can."""
    files: list[tuple[int, Path]] = []   # (index of the split in the list, shard)
    for k, one in enumerate(split.split(",")):
        found = shard_files(one, size, psp)
        if not found:
            raise FileNotFoundError(f"no cached shards in {split_dir(one, size, psp)}")
        files += [(k, f) for f in found]
    # Plan: how many rows each shard gives (the first shards hold the first plates: read no
    # more than asked for) and the arrays every split has (a scalar `psp` stamp is not one).
    plan, total, keys, headers = [], 0, None, {}
    for k, f in files:
        if count is not None and total >= count:
            break
        with np.load(f) as z:
            names = {n for n in z.files if n != "psp"}
            keys = names if keys is None else keys & names
            for n in names:
                shape, dtype = _npz_header(z, n)
                prev = headers.get(n)
                headers[n] = (shape[1:], dtype if prev is None else np.result_type(prev[1], dtype))
                if n == "y":
                    rows = shape[0]
        take = rows if count is None else min(rows, count - total)
        plan.append((k, f, take))
        total += take
    mapped = {"x"} & keys if mmap else set()
    data = {n: np.empty((total,) + headers[n][0], headers[n][1]) for n in sorted(keys - mapped)}
    at = 0
    for k, f, take in plan:
        with np.load(f) as z:
            for n in data:
                data[n][at:at + take] = z[n][:take]
        if "pair" in data:
            data["pair"][at:at + take] += k * PAIR_STRIDE
        at += take
    if mapped:
        data["x"] = MappedRows([npz_member_map(f, "x")[:take] for _, f, take in plan])
    return data


PAIR_STRIDE = 10_000_000   # pair ids of the k-th split of a list are offset by k times this


def pool_inputs(x: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Averages k x k blocks of every channel of cached plates [N, C, S, S] (round 19's scale
    probe: the network sees the plates at S / k). Done in chunks so that the peak is the input,
    the result and one chunk in float32, not the input again in float32."""
    if k == 1:
        return x
    n, c, h, w = x.shape
    if h % k or w % k:
        raise ValueError(f"plates of {h} x {w} do not pool by {k}")
    out = np.empty((n, c, h // k, w // k), x.dtype)
    for i in range(0, n, chunk):
        part = x[i:i + chunk].astype(np.float32)
        out[i:i + chunk] = part.reshape(len(part), c, h // k, k, w // k, k).mean(axis=(3, 5))
    return out


def unpack_masks(packed: np.ndarray, size: int) -> np.ndarray:
    return np.unpackbits(packed, axis=-1)[..., : size * size].reshape(-1, size, size).astype(bool)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--stop", type=int, default=None)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--shifted", action="store_true")
    ap.add_argument("--shard", type=int, default=SHARD)
    ap.add_argument("--twins", action="store_true",
                    help="follow every plate that carries artifacts by its clean counterfactual "
                         "twin (training splits)")
    ap.add_argument("--restamp", action="store_true",
                    help="check the cached split against the current sources (3 plates per "
                         "shard, bit for bit) and record their hash instead of generating")
    ap.add_argument("--psp", default=pp.PSP_V1, choices=pp.PREPROCESSINGS,
                    help="the preprocessing the cached tensors are made with")
    ap.add_argument("--family", default="a", choices=["a", "c", "d", "e", "f"],
                    help="the training family to generate: a = models/synth, c = models/famc, "
                         "d = models/famd, e = models/fame (anatomy randomisation over a, c "
                         "and d), f = models/famf (a projected 3-D scene) "
                         "(family B, models/famb, is only ever the gate and not offered here)")
    a = ap.parse_args(argv)
    FAMILY[0] = a.family
    if a.restamp:
        h = restamp_split(a.split, a.seed, a.size, a.shifted, psp=a.psp)
        print(f"{a.split}: cache matches the current sources; generator hash {h}", flush=True)
        return
    stop = a.count if a.stop is None else min(a.stop, a.count)
    for s in range(a.start, stop, a.shard):
        p = build_shard(a.split, a.seed, s, min(s + a.shard, stop), a.size, a.shifted,
                        twins=a.twins, psp=a.psp)
        print("wrote", p, flush=True)


if __name__ == "__main__":
    main()
