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


def _shard_at(split, start, rows, tmp_path, monkeypatch, **extra):
    monkeypatch.setattr(D, "CACHE", tmp_path)
    d = D.split_dir(split, 8)
    d.mkdir(parents=True, exist_ok=True)
    np.savez(d / f"{start:06d}-{start + rows:06d}.npz",
             x=np.full((rows, 2, 8, 8), start, np.float16), y=np.arange(start, start + rows) % 2,
             pair=np.arange(start, start + rows), psp=np.array("v1"), **extra)


def test_shards_fill_one_array_in_index_order_and_count_stops_across_splits(tmp_path,
                                                                           monkeypatch):
    # Shards written out of order; index order is what counts.
    _shard_at("ta", 3, 2, tmp_path, monkeypatch, hash=np.array(["abc"] * 2))
    _shard_at("ta", 0, 3, tmp_path, monkeypatch, hash=np.array(["abcdef"] * 3))
    _shard_at("tc", 0, 4, tmp_path, monkeypatch)   # no `hash`: not every split has it
    d = D.load_split("ta,tc", 8)
    assert sorted(d) == ["pair", "x", "y"], "only the arrays every split has"
    assert d["x"][:, 0, 0, 0].tolist() == [0, 0, 0, 3, 3, 0, 0, 0, 0]
    assert d["pair"].tolist() == [0, 1, 2, 3, 4] + [D.PAIR_STRIDE + i for i in range(4)]
    assert d["x"].dtype == np.float16 and d["x"].shape == (9, 2, 8, 8)
    # The count cuts inside the second split's shard, never reading past it.
    cut = D.load_split("ta,tc", 8, count=7)
    assert cut["pair"].tolist() == [0, 1, 2, 3, 4, D.PAIR_STRIDE, D.PAIR_STRIDE + 1]
    # A string array whose width differs between shards keeps its longest value whole.
    one = D.load_split("ta", 8)
    assert one["hash"].tolist() == ["abcdef"] * 3 + ["abc"] * 2
