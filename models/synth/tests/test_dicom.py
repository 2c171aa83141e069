import dataclasses
import shutil
import json
import os

import numpy as np
import pydicom
import pytest

from synth import dicom_io, make_set
from synth.plate import make_plate, to_stored

ALWAYS = ["explicit_le", "implicit_le"]
OTHERS = [s for s in dicom_io.SYNTAXES if s not in ALWAYS]


def _variant(p, bits, signed=0, mono1=False):
    enc = dict(bits=bits, signed=signed, mono1=mono1, lo=0.0, hi=float((1 << bits) - 1))
    return dataclasses.replace(p, stored=to_stored(p.brightness, enc), bits_stored=bits,
                               pixel_representation=signed,
                               photometric="MONOCHROME1" if mono1 else "MONOCHROME2")


@pytest.fixture(scope="module")
def base():
    return make_plate(42, scale=0.25, artifacts=[{"type": "scratch", "severity": 2}])


def _check(path, p, name):
    ds = pydicom.dcmread(path)
    assert ds.Modality == "IO"
    assert ds.SOPClassUID in (dicom_io.SOP_PRESENTATION, dicom_io.SOP_PROCESSING)
    assert ds.file_meta.TransferSyntaxUID == dicom_io.SYNTAXES[name][0]
    assert str(ds.PatientName).startswith("SYNTH^PATIENT^")
    assert ds.PlateID.startswith("SYNTH-PLATE-")
    for kw in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
               "AcquisitionDateTime", "StationName", "OperatorsName", "DeviceSerialNumber"):
        assert str(getattr(ds, kw))
    assert ds.BitsStored == p.bits_stored and ds.PixelRepresentation == p.pixel_representation
    assert ds.BitsAllocated == (8 if p.bits_stored == 8 else 16)
    assert ds.PhotometricInterpretation == p.photometric
    got = ds.pixel_array.astype(np.int64)
    want = p.stored.astype(np.int64)
    if dicom_io.SYNTAXES[name][1]:
        assert np.array_equal(got, want)
    else:
        assert np.abs(got - want).mean() <= dicom_io.LOSSY_MEAN_TOL * ((1 << p.bits_stored) - 1)


@pytest.mark.parametrize("name", ALWAYS)
@pytest.mark.parametrize("bits,signed,mono1", [(8, 0, False), (12, 0, True), (16, 0, False),
                                               (16, 1, False), (12, 1, True)])
def test_native_roundtrip(tmp_path, base, name, bits, signed, mono1):
    p = _variant(base, bits, signed, mono1)
    path = str(tmp_path / "x.dcm")
    dicom_io.write_dicom(p, path, transfer_syntax=name)
    _check(path, p, name)


@pytest.mark.parametrize("name", OTHERS)
def test_other_syntaxes_roundtrip(tmp_path, base, name):
    if not dicom_io.syntax_available(name):
        pytest.skip(f"no encoder/decoder for {name}")
    done = 0
    for bits, signed, mono1 in [(8, 0, False), (12, 0, True), (16, 0, False), (16, 1, True)]:
        p = _variant(base, bits, signed, mono1)
        if not dicom_io.compatible(name, p):
            continue
        path = str(tmp_path / f"{bits}_{signed}.dcm")
        dicom_io.write_dicom(p, path, transfer_syntax=name)   # verifies internally too
        _check(path, p, name)
        done += 1
    assert done >= 1


def test_verify_detects_corruption(tmp_path, base):
    p = _variant(base, 12)
    path = str(tmp_path / "x.dcm")
    dicom_io.write_dicom(p, path, transfer_syntax="explicit_le")
    q = dataclasses.replace(p, stored=(p.stored.astype(np.int64) ^ 1).astype(np.uint16))
    with pytest.raises(dicom_io.VerifyError):
        dicom_io.verify_file(path, q, "explicit_le")


def test_make_set_deterministic(tmp_path):
    outs = []
    for k in range(2):
        d = tmp_path / f"set{k}"
        make_set.main(["--out", str(d), "--count", "3", "--seed", "9", "--scale", "0.2",
                       "--syntaxes", "explicit_le,implicit_le"])
        outs.append(d)
    lines = (outs[0] / "labels.jsonl").read_text().splitlines()
    assert len(lines) == 3
    for line in lines:
        rec = json.loads(line)
        for key in ("file", "seed", "usable", "artifacts", "transfer_syntax", "photometric",
                    "bits", "rows", "columns"):
            assert key in rec
        a = (outs[0] / rec["file"]).read_bytes()
        b = (outs[1] / rec["file"]).read_bytes()
        assert a == b
        m = np.load(outs[0] / rec["masks"])
        assert "diagnostic" in m.files
        assert {f"artifact_{x['type']}" for x in rec["artifacts"]} <= set(m.files)
    assert sorted(os.listdir(outs[0])) == sorted(os.listdir(outs[1]))


def test_generated_plates_every_available_syntax(tmp_path):
    """Plates straight from make_plate (flipped views, all encodings) through every syntax."""
    names = [n for n in dicom_io.SYNTAXES if dicom_io.syntax_available(n)]
    assert set(ALWAYS) <= set(names)
    for s in range(8):
        p = make_plate(700 + s, scale=0.2)
        for name in names:
            if dicom_io.compatible(name, p):
                path = str(tmp_path / f"{s}_{name}.dcm")
                dicom_io.write_dicom(p, path, transfer_syntax=name)
                _check(path, p, name)


# The decoder must cope with what real scanners send, so some plates deliberately break two DX
# constraints (DX images are unsigned, with identity rescale). dciodvfy may flag exactly those.
_DELIBERATE = {
    "Rescale Slope": lambda p: p.rescale_slope != 1.0,
    "Rescale Intercept": lambda p: p.rescale_intercept != 0.0,
    "Pixel Representation": lambda p: p.pixel_representation != 0,
}


def _dciodvfy(path):
    import subprocess
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [ln for ln in (out.stdout + out.stderr).splitlines()
            if ln.startswith(("Error", "Warning"))]


@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy (dicom3tools) not installed; `make setup` installs it")
def test_generated_files_are_valid_intraoral_objects(tmp_path):
    """dicom3tools' validator finds nothing wrong with the Intra-oral IOD of generated files
    except the deliberate deviations above (deflate is left out: dciodvfy cannot inflate)."""
    syntaxes = [s for s in dicom_io.SYNTAXES
                if s != "deflated_le" and dicom_io.syntax_available(s)]
    clean = views = 0
    seen = set()
    for seed in range(24):
        p = make_plate(1000 + seed, scale=0.3)
        names = [s for s in syntaxes if dicom_io.compatible(s, p)]
        name = names[seed % len(names)]
        path = tmp_path / f"{seed}.dcm"
        dicom_io.write_dicom(p, path, transfer_syntax=name)
        problems = _dciodvfy(path)
        unexpected = [ln for ln in problems
                      if not any(f"<{attr}>" in ln and applies(p)
                                 for attr, applies in _DELIBERATE.items())]
        assert not unexpected, f"seed {seed} ({name}): {unexpected}"
        clean += not problems
        ds = pydicom.dcmread(path)
        assert ds.ImageLaterality in ("R", "L")
        assert len(ds.AnatomicRegionSequence) == 1
        teeth = [it.CodeMeaning.lower() for it in ds.PrimaryAnatomicStructureSequence]
        jaw = p.info["jaw"]
        assert all(("maxillary" in t) == (jaw == "upper") for t in teeth) or jaw == "both"
        assert all((" right " in t) == (ds.ImageLaterality == "R") for t in teeth)
        assert ("WindowCenter" in ds) == (ds.SOPClassUID == dicom_io.SOP_PRESENTATION)
        seen.add((p.view, jaw, ds.ImageLaterality))
        views += 1
    assert clean >= 4, f"only {clean} of {views} files without any finding"
    assert len(seen) >= 4, seen
