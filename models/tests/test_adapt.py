"""`make adapt` (plateqc_model/adapt.py) end to end on a tiny synthetic label folder: 24 DICOM
files written by synth.dicom_io with known labels (plus one unreadable file), a tiny replay and
check set in a temporary cache, a couple of fine-tuning steps. Needs torch and onnx(runtime):
the test environment (.venv-test) has no torch, so these skip there; run them with models/.venv
(`cd models && .venv/bin/python -m pytest -q tests/test_adapt.py`, about 20 s)."""
import csv
import hashlib
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from plateqc_model import adapt as A  # noqa: E402
from plateqc_model import export as E  # noqa: E402

TINY = ["--replay-count", "4", "--check-count", "8", "--steps", "2", "--eval-every", "1",
        "--variants", "head,all", "--verify-plates", "4"]


def _labels(folder, n_each=12, unreadable=True):
    from synth import dicom_io
    from synth.plate import make_plate
    img = folder / "images"
    img.mkdir(parents=True)
    rows, have, seed = [], {0: 0, 1: 0}, 777_000
    while min(have.values()) < n_each:
        seed += 1
        p = make_plate(seed, scale=0.3)
        c = int(not p.usable)
        if have[c] >= n_each:
            continue
        have[c] += 1
        ident = dicom_io.synthetic_identity(seed)
        f = img / f"{seed}.dcm"
        dicom_io.write_dicom(p, f, identity=ident)
        rows.append({"file": f"images/{f.name}", "sop_instance_uid": ident["SOPInstanceUID"],
                     "sha256": hashlib.sha256(f.read_bytes()).hexdigest(),
                     "label": "unusable" if c else "usable"})
    if unreadable:
        bad = img / "broken.dcm"
        bad.write_bytes(b"not a DICOM file")
        rows.append({"file": "images/broken.dcm", "sop_instance_uid": "1.2.3",
                     "sha256": hashlib.sha256(bad.read_bytes()).hexdigest(), "label": "usable"})
    cols = ["file", "sop_instance_uid", "sha256", "label", "model_verdict", "unusable_score",
            "model_version", "reviewer", "reason", "overridden_at", "review"]
    with open(folder / "labels.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, restval="")
        w.writeheader()
        w.writerows(rows)
    return rows


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapt")
    _labels(root / "labels")
    return root


def test_adapt_writes_a_contract_model(site):
    out = site / "ok" / "adapted.onnx"
    code = A.main(["--labels", str(site / "labels"), "--out", str(out), "--cache",
                   str(site / "cache"), "--margin", "1.0", *TINY])
    assert code == 0
    assert out.exists() and out.with_suffix(".md").exists()
    assert E.check_contract(out) == []
    md = A.onnx_metadata(out)
    res = json.loads(out.with_suffix(".json").read_text())
    base = A.onnx_metadata(A.HERE / "plateqc.onnx")["plateqc.model_version"]
    assert md["plateqc.model_version"] == f"{base}-site.{res['labels']['sha256'][:8]}"
    assert res["labels"]["used"] == 24 and res["labels"]["usable"] == 12
    assert [s["file"] for s in res["labels"]["skipped"]] == ["images/broken.dcm"]
    assert res["verify"]["pass"]
    assert res["chosen"] in ("head", "all")
    assert "feature_distance" not in {o.name for o in __import__("onnx").load(str(out)).graph.output}
    # the tiny replay/check plates went to their own directories, not the training caches
    names = {p.name for p in (site / "cache").iterdir()}
    assert names == {"adapt-train4-4-s256-v2", "adapt-trainc5-4-s256-v2", "adapt-test4-8-s256-v2"}


def test_adapt_refuses_when_the_in_family_check_fails(site, capsys):
    out = site / "refused" / "adapted.onnx"
    code = A.main(["--labels", str(site / "labels"), "--out", str(out), "--cache",
                   str(site / "cache"), "--margin", "-1", *TINY])
    assert code == A.EXIT_REFUSED
    assert not out.exists() and not out.with_suffix(".md").exists()
    assert (out.parent / "adapted.refused.md").exists()
    err = capsys.readouterr()
    assert "REFUSED" in err.err and "in-family AUC" in err.out


def test_adapt_refuses_too_few_labels(tmp_path, capsys):
    _labels(tmp_path / "labels", n_each=3, unreadable=False)
    code = A.main(["--labels", str(tmp_path / "labels"), "--out", str(tmp_path / "a.onnx"),
                   "--cache", str(tmp_path / "cache"), *TINY])
    assert code == A.EXIT_TOO_FEW
    assert "too few labelled plates" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


def test_holdout_split_is_per_class_and_order_free():
    rows = [{"sha256": hashlib.sha256(str(i).encode()).hexdigest()} for i in range(30)]
    y = np.array([i % 3 == 0 for i in range(30)], np.int64)     # 10 unusable, 20 usable
    tr, ho = A.holdout_split(rows, y)
    assert len(ho) == 6 and int(y[ho].sum()) == 2 and len(tr) == 24
    perm = np.random.default_rng(0).permutation(30)
    tr2, ho2 = A.holdout_split([rows[i] for i in perm], y[perm])
    assert sorted(rows[perm[i]]["sha256"] for i in ho2) == sorted(rows[i]["sha256"] for i in ho)
