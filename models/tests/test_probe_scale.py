"""Round 20 compares runs that read different input sizes (U at 256 px, BB at 384) on the same
plates: each run reads the cache made for its own size, and caches that hold other plates
must stop the comparison rather than score two runs on different plates."""
import numpy as np
import pytest

from plateqc_model import data as D
from plateqc_model import probe_scale as P


def fake_split(size, y, sev, seeds=(11, 12, 13)):
    n = len(y)
    return {"x": np.zeros((n, 2, size, size), np.float16), "y": np.array(y, np.uint8),
            "types": np.array([[v > 0] for v in sev], np.uint8),
            "sev": np.array([[v] for v in sev], np.float32), "seeds": np.array(seeds, np.int64)}


def test_each_size_gets_its_own_cache_when_the_plates_agree(monkeypatch):
    asked = []

    def load(split, size, psp):
        asked.append((split, size, psp))
        return fake_split(size, [1, 0, 1], [2, 0, 3])

    monkeypatch.setattr(D, "load_split", lambda split, size, psp=None: load(split, size, psp))
    out = P.same_plates("val4", {384, 256}, D.pp.PSP_V2)
    assert sorted(out) == [256, 384]
    assert out[384]["x"].shape[-1] == 384 and out[256]["x"].shape[-1] == 256
    assert sorted(asked) == [("val4", 256, D.pp.PSP_V2), ("val4", 384, D.pp.PSP_V2)]


@pytest.mark.parametrize("other", [dict(y=[1, 1, 1], sev=[2, 0, 3]),
                                   dict(y=[1, 0, 1], sev=[2, 0, 2]),
                                   dict(y=[1, 0, 1], sev=[2, 0, 3], seeds=(11, 12, 14))])
def test_caches_holding_other_plates_stop_the_comparison(monkeypatch, other):
    def load(split, size, psp=None):
        return (fake_split(size, [1, 0, 1], [2, 0, 3]) if size == 256
                else fake_split(size, **other))

    monkeypatch.setattr(D, "load_split", load)
    with pytest.raises(SystemExit, match="384 px cache holds other plates"):
        P.same_plates("val4", {256, 384}, D.pp.PSP_V2)
