"""Several cached splits read as one (plan-1.3.md round 5: two training families)."""
import numpy as np

from plateqc_model import data as D


def _shard(split, rows, first_pair, tmp_path, monkeypatch):
    monkeypatch.setattr(D, "CACHE", tmp_path)
    d = D.split_dir(split, 8)
    d.mkdir(parents=True, exist_ok=True)
    np.savez(d / f"000000-{rows:06d}.npz", x=np.zeros((rows, 2, 8, 8), np.float16),
             y=np.arange(rows) % 2, pair=np.arange(first_pair, first_pair + rows),
             psp=np.array("v1"))


def test_a_comma_list_concatenates_in_order_and_keeps_pairs_apart(tmp_path, monkeypatch):
    _shard("ta", 3, 7, tmp_path, monkeypatch)
    _shard("tc", 2, 7, tmp_path, monkeypatch)
    d = D.load_split("ta,tc", 8)
    assert len(d["y"]) == 5
    assert list(d["y"]) == [0, 1, 0, 0, 1]
    assert len(set(d["pair"].tolist())) == 5, "pair ids of the two families must not meet"
    assert len(D.load_split("ta,tc", 8, count=4)["y"]) == 4


def test_family_b_is_not_a_training_family():
    import pytest
    with pytest.raises(ValueError):
        D.family_sources("b")
