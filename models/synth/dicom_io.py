"""Write synthetic plates as DICOM Part 10 files (Modality IO) and verify them by re-reading.

Encoders: native / deflate / RLE by pydicom itself; JPEG-LS by pyjpegls and JPEG 2000 by
pylibjpeg-openjpeg (through pydicom's encoding plugins); JPEG baseline (process 1),
12-bit extended (process 2/4) and lossless process 14 SV1 by imagecodecs (libjpeg-turbo),
encapsulated with pydicom.  Decoding on re-read is pydicom's (pylibjpeg / pyjpegls plugins).
"""
from __future__ import annotations

import datetime as _dt
import functools
import hashlib

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid

from .plate import percentile_window

SOP_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.3"
SOP_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.3.1"

# short name -> (UID, lossless?)
SYNTAXES = {
    "explicit_le": ("1.2.840.10008.1.2.1", True),
    "implicit_le": ("1.2.840.10008.1.2", True),
    "deflated_le": ("1.2.840.10008.1.2.1.99", True),
    "explicit_be": ("1.2.840.10008.1.2.2", True),
    "rle": ("1.2.840.10008.1.2.5", True),
    "jpegls": ("1.2.840.10008.1.2.4.80", True),
    "j2k_lossless": ("1.2.840.10008.1.2.4.90", True),
    "j2k": ("1.2.840.10008.1.2.4.91", False),
    "jpeg_baseline": ("1.2.840.10008.1.2.4.50", False),
    "jpeg_extended": ("1.2.840.10008.1.2.4.51", False),
    "jpeg_lossless_sv1": ("1.2.840.10008.1.2.4.70", True),
}
NATIVE = ("explicit_le", "implicit_le", "deflated_le", "explicit_be")

# lossy tolerance on re-read, as fractions of the stored range 2^bits - 1
LOSSY_MEAN_TOL = 0.01
LOSSY_MAX_TOL = 0.15


class VerifyError(RuntimeError):
    pass


# Teeth on each kind of view (one side of one jaw; a bitewing shows both jaws).
_ANTERIOR_TEETH = ("central", "lateral", "canine")
_POSTERIOR_TEETH = ("first premolar", "second premolar", "first molar", "second molar")


def _code(code) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


@functools.lru_cache(maxsize=1)
def _cid4018() -> tuple:
    """All codes of CID 4018 (building pydicom's Collection is slow; one per process)."""
    from pydicom.sr.codedict import Collection
    cid = Collection("CID4018")
    return tuple(getattr(cid, k) for k in cid.dir())


def _teeth(jaw: str, side: str, kinds) -> list:
    """Permanent-teeth codes of CID 4018 (taken from pydicom's copy of PS3.16, matched by their
    meanings because the keywords are not regular)."""
    codes_ = _cid4018()
    jaw_word = "maxillary" if jaw == "upper" else "mandibular"
    out = []
    for kind in kinds:
        hits = [c for c in codes_ if jaw_word in c.meaning.lower()
                and f" {side} " in c.meaning.lower() and f" {kind} " in c.meaning.lower()]
        if len(hits) != 1:
            raise LookupError(f"CID 4018: {len(hits)} codes for {jaw_word} {side} {kind}")
        out.append(hits[0])
    return out


def presentation_window(plate, sop_class: str):
    """(center, width) written for the plate, or None. The DX IODs require a VOI window (or VOI
    LUT) on For Presentation images and forbid one on For Processing images; the plate's own
    window is used when it has one, else one from the 1st / 99th percentiles of the modality
    values (as synth.plate makes them). The model's preprocessing never reads the window."""
    if sop_class != SOP_PRESENTATION:
        return None
    if plate.window_center is not None:
        return plate.window_center, plate.window_width
    return percentile_window(plate.stored, plate.rescale_slope, plate.rescale_intercept)


def anatomy(plate, sop_instance_uid: str) -> dict:
    """Intra-oral anatomy attributes for the plate's view: the imaged jaw (CID 4016), the teeth
    (CID 4018), Image Laterality and Patient Orientation. The side of the mouth is not part of
    the rendered anatomy, so it is drawn from the instance UID (deterministic per file)."""
    from pydicom.sr.codedict import Collection
    region, jaw = plate.info.get("region", "posterior"), plate.info.get("jaw", "both")
    side = "right" if hashlib.sha256(sop_instance_uid.encode()).digest()[0] % 2 == 0 else "left"
    jaws = ("upper", "lower") if jaw == "both" else (jaw,)
    kinds = _ANTERIOR_TEETH if region == "anterior" else _POSTERIOR_TEETH
    teeth = [t for j in jaws for t in _teeth(j, side, kinds)]
    cid4016 = Collection("CID4016")
    jaw_code = {"upper": cid4016.Maxilla, "lower": cid4016.Mandible}.get(jaw, cid4016.JawRegion)
    # rows: as seen from in front of the patient (labial mounting), so towards the patient's
    # left on an anterior plate, towards the front on a right posterior one and the back on a
    # left one; columns: crowns of upper teeth are drawn downwards, of lower teeth upwards, so
    # top to bottom always runs towards the feet
    row = "L" if region == "anterior" else ("A" if side == "right" else "P")
    return {"region": jaw_code, "teeth": teeth, "laterality": side[0].upper(),
            "orientation": [row, "F"]}


def syntax_available(name: str) -> bool:
    """Can this environment encode *and* decode the syntax?"""
    try:
        if name in NATIVE or name == "rle":
            return True
        if name in ("jpegls", "j2k_lossless", "j2k"):
            from pydicom.pixels import get_encoder
            enc = get_encoder(SYNTAXES[name][0])
            return bool(enc.is_available) and _decoder_ok(name)
        if name.startswith("jpeg_"):
            import imagecodecs  # noqa: F401
            return bool(imagecodecs.JPEG8.available) and _decoder_ok(name)
    except Exception:
        return False
    return False


def _decoder_ok(name):
    from pydicom.pixels import get_decoder
    return bool(get_decoder(SYNTAXES[name][0]).is_available)


def compatible(name: str, plate) -> bool:
    """Whether the syntax can carry this plate's pixel format."""
    bits, signed = plate.bits_stored, plate.pixel_representation
    if name == "jpeg_baseline":
        return bits == 8 and not signed
    if name == "jpeg_extended":
        return bits == 12 and not signed
    if name in ("jpeg_lossless_sv1", "jpegls"):
        return not signed
    return True


def synthetic_identity(seed: int, patient_key: str | None = None, *, sop_class: str | None = None,
                       when: _dt.datetime | None = None) -> dict:
    """Obviously fake patient/study/series/instance identity, deterministic from the seed.

    Plates that share `patient_key` share the patient and the study (one series per plate).
    """
    pk = str(patient_key if patient_key is not None else seed)
    h = int(hashlib.sha256(f"synth-patient-{pk}".encode()).hexdigest()[:8], 16)
    r = np.random.Generator(np.random.PCG64(h))
    pnum = h % 10000
    base = when or (_dt.datetime(2026, 1, 5, 8, 0, 0)
                    + _dt.timedelta(days=int(r.integers(0, 300)), minutes=int(r.integers(0, 540))))
    ri = np.random.Generator(np.random.PCG64(int(seed) & 0xFFFFFFFFFFFF))
    acq = base + _dt.timedelta(seconds=int(ri.integers(0, 1800)))
    if sop_class is None:
        sop_class = SOP_PROCESSING if ri.random() < 0.1 else SOP_PRESENTATION
    station = int(ri.integers(1, 5))
    plate_no = int(ri.integers(1, 61))
    return {
        "PatientName": f"SYNTH^PATIENT^{pnum:04d}",
        "PatientID": f"SYNTH-{pnum:04d}",
        "PatientBirthDate": f"{1940 + int(r.integers(0, 70))}0101",
        "PatientSex": ["F", "M", "O"][int(r.integers(0, 3))],
        "StudyInstanceUID": generate_uid(entropy_srcs=["synth-study", pk]),
        "SeriesInstanceUID": generate_uid(entropy_srcs=["synth-series", str(seed), pk]),
        "SOPInstanceUID": generate_uid(entropy_srcs=["synth-instance", str(seed), pk]),
        "StudyID": f"{h % 100000:05d}",
        "AccessionNumber": f"SYN{h % 10**8:08d}",
        "StudyDate": base.strftime("%Y%m%d"),
        "StudyTime": base.strftime("%H%M%S"),
        "AcquisitionDateTime": acq.strftime("%Y%m%d%H%M%S"),
        "StationName": f"SYNTH-OP{station}",
        "OperatorsName": f"SYNTH^OPERATOR^{int(ri.integers(1, 9))}",
        "DeviceSerialNumber": f"SYN-PSP-SCANNER-{station:03d}",
        "PlateID": f"SYNTH-PLATE-{station}-{plate_no:03d}",
        "SOPClassUID": sop_class,
        "SeriesNumber": int(ri.integers(1, 20)),
        "InstanceNumber": 1,
    }


def build_dataset(plate, identity: dict) -> Dataset:
    ds = Dataset()
    for k in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
              "SeriesInstanceUID", "SOPInstanceUID", "StudyID", "AccessionNumber", "StudyDate",
              "StudyTime", "AcquisitionDateTime", "StationName", "OperatorsName",
              "DeviceSerialNumber", "PlateID", "SOPClassUID", "SeriesNumber", "InstanceNumber"):
        setattr(ds, k, identity[k])
    ds.SeriesDate = identity["StudyDate"]
    ds.SeriesTime = identity["StudyTime"]
    ds.ContentDate = identity["AcquisitionDateTime"][:8]
    ds.ContentTime = identity["AcquisitionDateTime"][8:]
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.Modality = "IO"
    ds.Manufacturer = "plateqc synthetic generator"
    ds.ManufacturerModelName = "synth"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = f"SYNTH {plate.view}"
    ds.BodyPartExamined = "JAW"
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.PresentationIntentType = ("FOR PRESENTATION" if identity["SOPClassUID"] == SOP_PRESENTATION
                                 else "FOR PROCESSING")
    anat = anatomy(plate, identity["SOPInstanceUID"])
    ds.ImageLaterality = anat["laterality"]
    ds.AnatomicRegionSequence = [_code(anat["region"])]
    ds.PrimaryAnatomicStructureSequence = [_code(c) for c in anat["teeth"]]
    ds.AcquisitionContextSequence = []
    ds.PositionerType = "NONE"
    ds.DetectorType = "STORAGE"
    ds.PatientOrientation = anat["orientation"]
    ds.PresentationLUTShape = "IDENTITY" if plate.photometric == "MONOCHROME2" else "INVERSE"
    ds.BurnedInAnnotation = "NO"
    ds.ImagerPixelSpacing = [f"{1.0 / plate.px_per_mm:.6f}"] * 2
    ds.PixelSpacing = [f"{1.0 / plate.px_per_mm:.6f}"] * 2
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = plate.photometric
    ds.Rows, ds.Columns = (int(v) for v in plate.stored.shape)
    ds.BitsAllocated = 8 if plate.bits_stored == 8 else 16
    ds.BitsStored = plate.bits_stored
    ds.HighBit = plate.bits_stored - 1
    ds.PixelRepresentation = plate.pixel_representation
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = -1 if plate.photometric == "MONOCHROME2" else 1
    ds.RescaleSlope = f"{plate.rescale_slope:g}"
    ds.RescaleIntercept = f"{plate.rescale_intercept:g}"
    ds.RescaleType = "US"
    window = presentation_window(plate, identity["SOPClassUID"])
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = (f"{v:g}" for v in window)
    ds.LossyImageCompression = "00"
    return ds


def pixel_array_for(plate) -> np.ndarray:
    a = plate.stored
    if plate.bits_stored == 8:
        return np.ascontiguousarray(a, dtype=np.uint8)
    return np.ascontiguousarray(a, dtype=np.int16 if plate.pixel_representation else np.uint16)


def _strip_app(b: bytes) -> bytes:
    """Drop JFIF APPn segments after SOI (DICOM JPEG streams need none)."""
    out = bytearray(b[:2])
    i = 2
    while i + 4 <= len(b) and b[i] == 0xFF and 0xE0 <= b[i + 1] <= 0xEF:
        i += 2 + int.from_bytes(b[i + 2:i + 4], "big")
    out += b[i:]
    return bytes(out)


def write_dicom(plate, path, *, transfer_syntax: str = "explicit_le", identity: dict | None = None,
                verify: bool = True) -> dict:
    """Write `plate` to `path` with the named transfer syntax (a key of SYNTAXES or its UID).

    Returns {"transfer_syntax": uid, "lossless": bool, "max_abs_err": int, "mean_abs_err": float}.
    Raises VerifyError when the re-read pixels differ (lossless) or exceed the lossy tolerance.
    """
    name = transfer_syntax
    if name not in SYNTAXES:
        inv = {v[0]: k for k, v in SYNTAXES.items()}
        if name not in inv:
            raise ValueError(f"unknown transfer syntax {transfer_syntax!r}")
        name = inv[name]
    uid, lossless = SYNTAXES[name]
    if not compatible(name, plate):
        raise ValueError(f"{name} cannot carry {plate.bits_stored}-bit "
                         f"{'signed' if plate.pixel_representation else 'unsigned'} pixels")
    if identity is None:
        identity = synthetic_identity(plate.seed)
    ds = build_dataset(plate, identity)
    arr = pixel_array_for(plate)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.ImplementationClassUID = generate_uid(entropy_srcs=["plateqc-synth-implementation"])
    meta.ImplementationVersionName = "PLATEQC_SYNTH1"
    ds.file_meta = meta

    if name in NATIVE:
        meta.TransferSyntaxUID = uid
        ds.PixelData = arr.tobytes()
        ds["PixelData"].VR = "OB" if ds.BitsAllocated == 8 else "OW"
        if name == "explicit_be" and ds.BitsAllocated == 16:
            ds.PixelData = arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    elif name in ("rle", "jpegls", "j2k_lossless", "j2k"):
        kw = {}
        if name == "j2k":
            kw = {"j2k_psnr": [85.0 if plate.bits_stored > 8 else 48.0]}
        ds.PixelData = arr.tobytes()
        ds["PixelData"].VR = "OB" if ds.BitsAllocated == 8 else "OW"
        meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
        ds.compress(uid, arr, generate_instance_uid=False, **kw)
    else:
        import imagecodecs
        a = arr
        if name == "jpeg_lossless_sv1":
            frame = imagecodecs.jpeg8_encode(a, lossless=True, predictor=1,
                                             bitspersample=plate.bits_stored)
        elif name == "jpeg_extended":
            frame = imagecodecs.jpeg8_encode(a.astype(np.uint16), level=92,
                                             bitspersample=12)
        else:
            frame = imagecodecs.jpeg8_encode(a.astype(np.uint8), level=92)
        frame = _strip_app(bytes(frame))
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        meta.TransferSyntaxUID = uid
    if not lossless:
        ds.LossyImageCompression = "01"
        raw = arr.size * (1 if ds.BitsAllocated == 8 else 2)
        size = len(ds.PixelData)
        ds.LossyImageCompressionRatio = f"{raw / max(1, size):.2f}"
        ds.LossyImageCompressionMethod = "ISO_15444_1" if name == "j2k" else "ISO_10918_1"
    ds.save_as(path, enforce_file_format=True)
    return verify_file(path, plate, name) if verify else {"transfer_syntax": uid}


def verify_file(path, plate, name: str) -> dict:
    uid, lossless = SYNTAXES[name]
    ds = pydicom.dcmread(path)
    if ds.file_meta.TransferSyntaxUID != uid:
        raise VerifyError(f"{path}: transfer syntax {ds.file_meta.TransferSyntaxUID} != {uid}")
    got = ds.pixel_array.astype(np.int64)
    want = pixel_array_for(plate).astype(np.int64)
    if got.shape != want.shape:
        raise VerifyError(f"{path}: shape {got.shape} != {want.shape}")
    diff = np.abs(got - want)
    mx, mean = int(diff.max()), float(diff.mean())
    rng_ = (1 << plate.bits_stored) - 1
    if lossless and mx != 0:
        raise VerifyError(f"{path}: lossless {name} re-read differs (max {mx})")
    if not lossless and (mean > LOSSY_MEAN_TOL * rng_ or mx > LOSSY_MAX_TOL * rng_):
        raise VerifyError(f"{path}: lossy {name} error too large (mean {mean:.2f}, max {mx})")
    return {"transfer_syntax": uid, "lossless": lossless, "max_abs_err": mx,
            "mean_abs_err": round(mean, 4)}
