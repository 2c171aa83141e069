"""The choice scores each model on the plates made for its own input size (round 20)."""
import pytest

pytest.importorskip("torch")   # choose.py exports candidates; the test environment has no torch

from plateqc_model import choose as C  # noqa: E402


def test_splits_are_loaded_once_per_preprocessing_and_size(monkeypatch):
    calls = []

    def load_scored(split, size, psp, taus):
        calls.append((split, size, psp))
        return {"split": split, "size": size}

    monkeypatch.setattr(C.AM, "load_scored", load_scored)
    s = C.Splits("val4", "shifted4")
    v256, sh256 = s.get("plateqc-psp-v2", 256)
    v384, _ = s.get("plateqc-psp-v2", 384)
    s.get("plateqc-psp-v2", 256)
    assert (v256["size"], sh256["size"], v384["size"]) == (256, 256, 384)
    assert calls == [("val4", 256, "plateqc-psp-v2"), ("shifted4", 256, "plateqc-psp-v2"),
                     ("val4", 384, "plateqc-psp-v2"), ("shifted4", 384, "plateqc-psp-v2")]
