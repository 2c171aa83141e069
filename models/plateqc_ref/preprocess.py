"""Reference implementation of the plateqc preprocessings ``plateqc-psp-v1`` and ``plateqc-psp-v2``.

This module is the ground truth the Rust implementation is tested against
(tests/fixtures/golden.json).  It follows models/README.md literally and does
all arithmetic in float64.  Keep it boring: no shortcuts that change numbers.

Entry points
------------
preprocess_dataset(ds, size)            pydicom Dataset -> (tensor [2,S,S] float64, rect)
preprocess_stored(stored, bits_stored, pixel_representation, photometric,
                  rescale_slope, rescale_intercept, size)
preprocess_plate(plate, size)           a synth.plate.Plate (fields of the same names)
cam_to_native(cam, rect, native_hw, size)
                                        layer-resolution map -> native plate size

``rect`` is ``(top, left, oh, ow)`` of the letterbox rectangle in the S x S canvas.
Each entry point takes ``psp`` (default v1, the preprocessing of the shipped 1.x models).

The two differ in the channels (models/README.md, "Preprocessing"):
  v1: c0 = modality values windowed at their 0.5/99.5 % percentiles; c1 = stored value scaled
      by the Bits Stored range (absolute exposure level).
  v2: c0 = the mid-rank of each pixel's modality value among all pixels of the frame, over
      n - 1 (the empirical CDF), which no monotone display curve can change (gamma, LUT,
      S-curve, auto-ranging, histogram equalisation); c1 = local contrast of the resized c0
      (0.5 + 2 (c0 - its 17 x 17 box mean inside the plate), clipped to [0, 1]).
  v2 answers issue #12: the 1.x models read vendor display curves and auto-ranged levels as
  artifacts (models/plan-1.3.md).
"""
from __future__ import annotations

import functools
import math

import numpy as np

PSP_V1 = "plateqc-psp-v1"
PSP_V2 = "plateqc-psp-v2"
PREPROCESSINGS = (PSP_V1, PSP_V2)
PREPROCESSING_ID = PSP_V1   # the default of every entry point
DEFAULT_SIZE = 256
LOCAL_RADIUS = 8            # v2 c1: the box is (2 r + 1)^2 at the S x S resolution
LOCAL_GAIN = 2.0            # v2 c1: 0.5 + gain * (c0 - box mean)


# ---------------------------------------------------------------------------
# step 1: stored values
# ---------------------------------------------------------------------------
def stored_values(raw: np.ndarray, bits_stored: int, pixel_representation: int) -> np.ndarray:
    """Mask ``raw`` to Bits Stored and sign-extend when Pixel Representation is 1.

    Returns int64.  ``raw`` may be any integer array (signed or unsigned container)."""
    b = int(bits_stored)
    if not 1 <= b <= 32:
        raise ValueError(f"unsupported Bits Stored {b}")
    a = np.asarray(raw)
    if a.dtype.kind not in "iu":
        raise ValueError(f"stored values must be integers, got {a.dtype}")
    # reinterpret the container bits as unsigned, then mask
    if a.dtype.kind == "i":
        a = a.view(a.dtype.str.replace("i", "u"))
    v = a.astype(np.int64) & ((1 << b) - 1)
    if int(pixel_representation) == 1:
        sign = 1 << (b - 1)
        v = np.where(v >= sign, v - (1 << b), v)
    return v


def stored_limits(bits_stored: int, pixel_representation: int) -> tuple[int, int]:
    b = int(bits_stored)
    if int(pixel_representation) == 1:
        return -(1 << (b - 1)), (1 << (b - 1)) - 1
    return 0, (1 << b) - 1


# ---------------------------------------------------------------------------
# step 3 helper: percentile indices in exact integer arithmetic
# ---------------------------------------------------------------------------
def percentile_indices(n: int) -> tuple[int, int]:
    """0-based indices of lo/hi in the ascending sort of n values.

    lo = floor(0.005 (n-1)), hi = ceil(0.995 (n-1)), evaluated exactly as
    floor(5 (n-1) / 1000) and ceil(995 (n-1) / 1000) (integer arithmetic, so
    no float rounding can move an index)."""
    k = n - 1
    lo = (5 * k) // 1000
    hi = -((-995 * k) // 1000)
    return lo, hi


# ---------------------------------------------------------------------------
# step 6: area resampling
# ---------------------------------------------------------------------------
def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] float64 matrix of area-resampling weights (cached, read-only).

    Output index i covers [i*r, (i+1)*r) with r = n_in / n_out; source pixel j
    weighs overlap([i*r, (i+1)*r), [j, j+1)) / r."""
    return _area_weights(int(n_in), int(n_out))


@functools.lru_cache(maxsize=256)
def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    r = n_in / n_out
    w = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        a = i * r
        b = (i + 1) * r
        j0 = int(math.floor(a))
        j1 = min(n_in, int(math.ceil(b)))
        for j in range(j0, j1):
            ov = min(b, j + 1.0) - max(a, float(j))
            if ov > 0.0:
                w[i, j] = ov / r
    w.setflags(write=False)
    return w


def area_resize(img: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """Separable area resize of a 2-D float64 image: rows first (each row W -> ow),
    then columns (each column H -> oh)."""
    h, w = img.shape
    tmp = img @ area_weights(w, ow).T          # [h, ow]: every row resampled
    return area_weights(h, oh) @ tmp           # [oh, ow]: every column resampled


def letterbox_rect(h: int, w: int, size: int) -> tuple[int, int, int, int]:
    scale = size / max(h, w)
    oh = max(1, int(math.floor(h * scale + 0.5)))
    ow = max(1, int(math.floor(w * scale + 0.5)))
    top = (size - oh) // 2
    left = (size - ow) // 2
    return top, left, oh, ow


# ---------------------------------------------------------------------------
# v2 helpers: rank channel and local contrast
# ---------------------------------------------------------------------------
def rank_channel(v: np.ndarray, slope: float) -> np.ndarray:
    """Mid-rank of every pixel's modality value m = slope v + intercept among all n pixels,
    over n - 1: (count of smaller values + (count of equal values - 1) / 2) / (n - 1).

    Ranked on the stored integers v (the modality LUT is linear, so the order of m is the order
    of v, reversed for a negative slope; a zero slope makes all values equal -> 0.5). Integer
    ranks keep the result exact and free of float ties."""
    flat = np.asarray(v, dtype=np.int64).reshape(v.shape)
    if slope == 0.0:
        return np.full(v.shape, 0.5, dtype=np.float64)
    return midrank(-flat if slope < 0.0 else flat)


def midrank(v: np.ndarray) -> np.ndarray:
    """(count of smaller values + (count of equal values - 1) / 2) / (n - 1) for every element
    of `v` among all of them (0.5 everywhere for fewer than two); the rank step of
    `rank_channel`, also used by training's style randomisation on float images."""
    flat = v.reshape(-1)
    n = flat.size
    if n < 2:
        return np.full(v.shape, 0.5, dtype=np.float64)
    if np.issubdtype(flat.dtype, np.integer):
        lo, hi = int(flat.min()), int(flat.max())
        if hi - lo <= max(4 * n, 1 << 16):
            # stored plates are integers over a range no wider than a few times their pixel
            # count: counting them is exact like the sort below (the same integer counts, the
            # same float arithmetic, so the same bits) and takes a tenth of its time, which
            # was a third of making a training plate
            off = (flat - lo).astype(np.intp)
            counts = np.bincount(off, minlength=hi - lo + 1)
            less = np.cumsum(counts) - counts
            mid = (less.astype(np.float64) + (counts.astype(np.float64) - 1.0) / 2.0) / float(n - 1)
            return mid[off].reshape(v.shape)
    _, inv, counts = np.unique(flat, return_inverse=True, return_counts=True)
    less = np.cumsum(counts) - counts
    mid = (less.astype(np.float64) + (counts.astype(np.float64) - 1.0) / 2.0) / float(n - 1)
    return mid[inv.reshape(-1)].reshape(v.shape)


def box_mean(img: np.ndarray, r: int) -> np.ndarray:
    """Mean over the (2r+1) x (2r+1) window around each pixel, the window cut to the image
    (divided by the number of pixels it holds there)."""
    h, w = img.shape
    ii = np.zeros((h + 1, w + 1), dtype=np.float64)
    ii[1:, 1:] = np.cumsum(np.cumsum(img, axis=0), axis=1)
    y0 = np.clip(np.arange(h) - r, 0, h)
    y1 = np.clip(np.arange(h) + r + 1, 0, h)
    x0 = np.clip(np.arange(w) - r, 0, w)
    x1 = np.clip(np.arange(w) + r + 1, 0, w)
    s = (ii[y1][:, x1] - ii[y0][:, x1] - ii[y1][:, x0] + ii[y0][:, x0])
    cnt = (y1 - y0)[:, None].astype(np.float64) * (x1 - x0)[None, :].astype(np.float64)
    return s / cnt


def local_contrast(c0: np.ndarray) -> np.ndarray:
    """v2 channel 1 from the resized (letterbox-free) channel 0."""
    return np.clip(0.5 + LOCAL_GAIN * (c0 - box_mean(c0, LOCAL_RADIUS)), 0.0, 1.0)


# ---------------------------------------------------------------------------
# the whole pipeline
# ---------------------------------------------------------------------------
def preprocess_stored(stored: np.ndarray, bits_stored: int, pixel_representation: int,
                      photometric: str, rescale_slope: float | None = None,
                      rescale_intercept: float | None = None,
                      size: int = DEFAULT_SIZE, psp: str = PREPROCESSING_ID):
    """Stored pixel values (frame 1, HxW) + attributes -> (tensor [2,S,S] float64, rect)."""
    if psp not in PREPROCESSINGS:
        raise ValueError(f"unknown preprocessing {psp!r}")
    v = stored_values(stored, bits_stored, pixel_representation)
    if v.ndim != 2:
        raise ValueError(f"expected a single 2-D frame, got shape {v.shape}")
    h, w = v.shape
    vf = v.astype(np.float64)
    slope = 1.0 if rescale_slope is None else float(rescale_slope)
    intercept = 0.0 if rescale_intercept is None else float(rescale_intercept)
    mono1 = str(photometric).strip().upper() == "MONOCHROME1"
    top, left, oh, ow = letterbox_rect(h, w, size)
    out = np.zeros((2, size, size), dtype=np.float64)
    if psp == PSP_V2:
        # step 2-3: rank of the modality value; step 5: MONOCHROME1 inversion
        c0 = rank_channel(v, slope)
        if mono1:
            c0 = 1.0 - c0
        # step 6-7: resize with aspect kept, letterbox into zeros; c1 from the resized c0
        r0 = area_resize(c0, oh, ow)
        out[0, top:top + oh, left:left + ow] = r0
        out[1, top:top + oh, left:left + ow] = local_contrast(r0)
        return out, (top, left, oh, ow)
    # step 2: modality LUT
    m = vf * slope + intercept
    # step 3: contrast channel from robust percentiles
    n = m.size
    ilo, ihi = percentile_indices(n)
    # np.partition puts exactly the values of the ascending sort at ilo and ihi
    ms = np.partition(m.reshape(-1), (ilo, ihi))
    lo = ms[ilo]
    hi = ms[ihi]
    if hi <= lo:
        c0 = np.zeros_like(m)
    else:
        c0 = np.clip((m - lo) / (hi - lo), 0.0, 1.0)
    # step 4: exposure channel from the Bits Stored limits
    vmin, vmax = stored_limits(bits_stored, pixel_representation)
    c1 = (vf - float(vmin)) / (float(vmax) - float(vmin))
    # step 5: MONOCHROME1 inversion
    if mono1:
        c0 = 1.0 - c0
        c1 = 1.0 - c1
    # step 6 + 7: resize with aspect kept, letterbox into zeros
    out[0, top:top + oh, left:left + ow] = area_resize(c0, oh, ow)
    out[1, top:top + oh, left:left + ow] = area_resize(c1, oh, ow)
    return out, (top, left, oh, ow)


def preprocess_plate(plate, size: int = DEFAULT_SIZE, psp: str = PREPROCESSING_ID):
    """Same as preprocess_stored for a synth Plate (no DICOM round trip)."""
    return preprocess_stored(plate.stored, plate.bits_stored, plate.pixel_representation,
                             plate.photometric, plate.rescale_slope, plate.rescale_intercept,
                             size, psp)


def raw_stored_from_dataset(ds) -> np.ndarray:
    """Frame 1 of the pixel data as decoded by pydicom (container integers)."""
    arr = ds.pixel_array
    nframes = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if nframes > 1 or arr.ndim == 3:
        arr = arr[0]
    return arr


def preprocess_dataset(ds, size: int = DEFAULT_SIZE, psp: str = PREPROCESSING_ID):
    """pydicom Dataset -> (tensor [2,S,S] float64, rect)."""
    slope = ds.get("RescaleSlope", None)
    intercept = ds.get("RescaleIntercept", None)
    return preprocess_stored(raw_stored_from_dataset(ds), int(ds.BitsStored),
                             int(ds.PixelRepresentation), str(ds.PhotometricInterpretation),
                             None if slope is None else float(slope),
                             None if intercept is None else float(intercept), size, psp)


def preprocess_file(path, size: int = DEFAULT_SIZE, psp: str = PREPROCESSING_ID):
    import pydicom
    return preprocess_dataset(pydicom.dcmread(str(path)), size, psp)


# ---------------------------------------------------------------------------
# CAM back to the plate
# ---------------------------------------------------------------------------
def bilinear_resize(img: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres (align_corners=False), edge clamped.

    Source coordinate of output index i: x = (i + 0.5) * n_in / n_out - 0.5,
    clamped to [0, n_in - 1]."""
    def axis(n_in: int, n_out: int):
        x = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        x = np.clip(x, 0.0, n_in - 1.0)
        i0 = np.floor(x).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        f = x - i0
        return i0, i1, f

    img = np.asarray(img, dtype=np.float64)
    h, w = img.shape
    r0, r1, fr = axis(h, oh)
    c0, c1, fc = axis(w, ow)
    rows = img[r0, :] * (1.0 - fr)[:, None] + img[r1, :] * fr[:, None]
    return rows[:, c0] * (1.0 - fc)[None, :] + rows[:, c1] * fc[None, :]


def cam_to_native(cam: np.ndarray, rect, native_hw, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Layer-resolution CAM [h,w] -> S x S (bilinear) -> crop to rect -> native H x W (bilinear)."""
    top, left, oh, ow = rect
    full = bilinear_resize(cam, size, size)
    crop = full[top:top + oh, left:left + ow]
    return bilinear_resize(crop, int(native_hw[0]), int(native_hw[1]))


def normalize_cam(cam: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Min-max normalisation with an explicit all-zero / non-finite case (-> zeros)."""
    cam = np.asarray(cam, dtype=np.float64)
    if not np.all(np.isfinite(cam)):
        cam = np.nan_to_num(cam, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(cam.min()), float(cam.max())
    if hi - lo <= eps:
        return np.zeros_like(cam)
    return (cam - lo) / (hi - lo + eps)


def plate_mask_to_input(mask: np.ndarray, size: int = DEFAULT_SIZE):
    """Boolean native mask -> float coverage in the S x S letterboxed frame (area resized)."""
    h, w = mask.shape
    top, left, oh, ow = letterbox_rect(h, w, size)
    out = np.zeros((size, size), dtype=np.float64)
    out[top:top + oh, left:left + ow] = area_resize(mask.astype(np.float64), oh, ow)
    return out
