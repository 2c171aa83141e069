"""Round 16's rule: which unusable plates' labels the input cannot carry (ambiguous.py)."""
import numpy as np
import pytest

from plateqc_model import ambiguous as AM
from plateqc_model import data as D

S = 16
K = len(D.TYPE_NAMES)


def _rows(specs, seed=0):
    """specs: (y, {type: severity}, alpha) per plate; each plate is followed by its clean twin.
    The plate's channel 0 is the twin's plus alpha times independent noise, so its distance
    from the twin grows with alpha."""
    rng = np.random.default_rng(seed)
    x, y, sev, pair, twin, rect = [], [], [], [], [], []
    for i, (label, arts, alpha) in enumerate(specs):
        base = rng.normal(size=(2, S, S))
        noisy = base.copy()
        noisy[0] += alpha * rng.normal(size=(S, S))
        s = np.zeros(K, np.float32)
        for t, v in arts.items():
            s[D.TYPE_NAMES.index(t)] = v
        for img, lab, sv, tw in ((noisy, label, s, 0), (base, 0, np.zeros(K, np.float32), 1)):
            x.append(img)
            y.append(lab)
            sev.append(sv)
            pair.append(i)
            twin.append(tw)
            rect.append((0, 0, S, S))
    return {"x": np.array(x, np.float16), "y": np.array(y, np.uint8), "sev": np.array(sev),
            "pair": np.array(pair, np.int64), "twin": np.array(twin, np.uint8),
            "rect": np.array(rect, np.int32)}


def test_family_of_split_names():
    assert AM.family_of("train4") == "a"
    assert AM.family_of("val4t") == "a"
    assert AM.family_of("shifted4t") == "a"
    assert AM.family_of("trainc5") == "c"
    assert AM.family_of("valf13t") == "f"
    with pytest.raises(ValueError):
        AM.family_of("famb")


def test_distance_is_zero_for_the_twin_and_grows_with_the_change():
    data = _rows([(1, {"motion": 2}, 0.0), (1, {"motion": 2}, 0.3), (1, {"motion": 2}, 3.0)])
    d = AM.twin_distance(data)
    plates = d[data["twin"] == 0]
    assert np.isnan(d[data["twin"] == 1]).all()
    assert plates[0] == pytest.approx(0.0, abs=1e-3)
    assert plates[0] < plates[1] < plates[2]
    assert plates[2] > 0.5


def _family(n_ref=40):
    # usable severity-1 delayed scans whose change from the twin spreads over alpha 0.1-0.4
    ref = [(0, {"delayed_scan": 1}, a) for a in np.linspace(0.1, 0.4, n_ref)]
    cand = [
        (1, {"delayed_scan": 2}, 0.05),                  # fainter than usable ones: ambiguous
        (1, {"delayed_scan": 2}, 2.0),                   # plainly visible: kept
        (1, {"delayed_scan": 2, "scratch": 2}, 0.05),    # a local severity 2 decides: kept
        (1, {"delayed_scan": 3}, 0.05),                  # severity 3: kept
        (1, {"reversed_plate": 2}, 0.05),                # not one of the five: kept
        (1, {"delayed_scan": 2, "scratch": 1}, 0.05),    # a cosmetic local one beside it
    ]
    return _rows(ref + cand, seed=3), len(ref)


def test_only_faint_severity_two_global_plates_are_ambiguous():
    data, n_ref = _family()
    taus = AM.thresholds(data, ["train4"])
    assert taus["a"]["delayed_scan"]["from"] == "type"
    assert taus["a"]["delayed_scan"]["n"] == n_ref
    drop = AM.ambiguous(data, ["train4"], taus)
    plate_rows = np.flatnonzero(data["twin"] == 0)
    dropped = [int(np.flatnonzero(plate_rows == r)[0]) - n_ref for r in np.flatnonzero(drop)]
    assert dropped == [0, 5]
    assert not drop[data["twin"] == 1].any()
    summ = AM.summary(data, ["train4"], drop)["a"]
    assert summ["dropped"] == 2 and summ["delayed_scan"]["dropped"] == 2


def test_thin_reference_falls_back_to_the_pooled_five():
    data, _ = _family(n_ref=10)
    taus = AM.thresholds(data, ["train4"])
    assert taus["a"]["delayed_scan"]["from"] == "pooled"
    assert taus["a"]["delayed_scan"]["tau"] == taus["a"]["pooled"]["tau"]
    assert taus["a"]["motion"]["n"] == 0


def test_compact_moves_rows_in_place_like_a_copy():
    data, _ = _family()
    keep = np.ones(len(data["y"]), bool)
    keep[[0, 3, 4, 10, len(keep) - 1]] = False
    expected = AM.subset(data, keep)
    x_buf = data["x"]
    for chunk in (3, 4, 7, 1000):   # the last chunk partial and whole
        got = AM.compact({k: v.copy() for k, v in data.items()}, keep, chunk=chunk)
        for k in expected:
            np.testing.assert_array_equal(got[k], expected[k])
    got = AM.compact(data, keep, chunk=5)
    assert np.shares_memory(got["x"], x_buf)
    np.testing.assert_array_equal(got["x"], expected["x"])


def test_scored_sets_never_count_twins_and_can_leave_out_the_ambiguous(monkeypatch):
    data, n_ref = _family()
    monkeypatch.setattr(D, "load_split", lambda split, size, psp=None: {
        k: v.copy() for k, v in data.items()})
    plates = int((data["twin"] == 0).sum())
    all_plates = AM.load_scored("val4t", 256, D.pp.PSP_V2)
    assert len(all_plates["y"]) == plates
    assert not all_plates["twin"].any()
    taus = AM.thresholds(data, ["train4"])
    scored = AM.load_scored("val4t", 256, D.pp.PSP_V2, taus)
    assert len(scored["y"]) == plates - 2
    # what is left out are unusable plates; every usable one is still scored
    assert int((scored["y"] == 0).sum()) == int((all_plates["y"] == 0).sum())


def test_judge_records_the_rule_and_matches_its_parts():
    data, _ = _family()
    drop, record = AM.judge(data, ["train4"])
    taus = AM.thresholds(data, ["train4"])
    np.testing.assert_array_equal(drop, AM.ambiguous(data, ["train4"], taus))
    assert record["taus"] == taus
    assert record["rule"] == {"five": list(AM.FIVE), "percentile": AM.PERCENTILE,
                              "min_reference": AM.MIN_REFERENCE}
    assert record["summary"]["a"]["dropped"] == int(drop.sum()) == 2


def test_relabel_teaches_only_the_ambiguous_plates_as_usable_with_severity_one():
    data, _ = _family()
    before = {k: v.copy() for k, v in data.items()}
    rows, _ = AM.judge(data, ["train4"])
    got = AM.relabel(data, rows)
    assert got["y"] is data["y"]                       # in place, no copy of the caches
    assert (data["y"][rows] == 0).all() and (before["y"][rows] == 1).all()
    np.testing.assert_array_equal(data["y"][~rows], before["y"][~rows])
    np.testing.assert_array_equal(data["sev"][~rows], before["sev"][~rows])
    k = D.TYPE_NAMES.index("delayed_scan")
    assert (data["sev"][rows, k] == 1).all()           # still there, now acceptable
    # the cosmetic local type beside one of them keeps its severity
    s = D.TYPE_NAMES.index("scratch")
    np.testing.assert_array_equal(data["sev"][rows, s], before["sev"][rows, s])
    np.testing.assert_array_equal(data["x"], before["x"])
    # judged again, a relabelled plate is a usable reference now, never a candidate
    again, _ = AM.judge(data, ["train4"])
    assert not again.any()
