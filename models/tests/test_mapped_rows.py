"""Round 20: training plates read in place from the shards (`load_split(mmap=True)`) are the
same rows, in the same order, as the loaded split."""
import zipfile

import numpy as np
import pytest

from plateqc_model import data as D


def write_split(root, monkeypatch, sizes, compress=False, size=8):
    monkeypatch.setattr(D, "CACHE", root)
    d = D.split_dir("tiny", size, D.pp.PSP_V2)
    d.mkdir(parents=True)
    rng = np.random.default_rng(11)
    at = 0
    for n in sizes:
        arrays = {"x": rng.random((n, 2, size, size)).astype(np.float16),
                  "y": rng.integers(0, 2, n).astype(np.uint8),
                  "pair": np.arange(at, at + n, dtype=np.int64)}
        (np.savez_compressed if compress else np.savez)(d / f"{at:06d}-{at + n:06d}.npz",
                                                        **arrays)
        at += n
    return d


def test_mapped_rows_equal_the_loaded_rows_in_any_order(tmp_path, monkeypatch):
    write_split(tmp_path, monkeypatch, [5, 4, 6])
    loaded = D.load_split("tiny", 8, count=13, psp=D.pp.PSP_V2)
    mapped = D.load_split("tiny", 8, count=13, psp=D.pp.PSP_V2, mmap=True)
    assert isinstance(mapped["x"], D.MappedRows) and isinstance(loaded["x"], np.ndarray)
    # the count cuts the third shard after 4 of its 6 rows
    assert len(mapped["x"]) == 13 and mapped["x"].shape == loaded["x"].shape
    np.testing.assert_array_equal(mapped["y"], loaded["y"])
    rng = np.random.default_rng(3)
    for _ in range(5):
        b = rng.permutation(13)[:7]      # rows from every shard, out of order
        np.testing.assert_array_equal(mapped["x"][b], loaded["x"][b])
    np.testing.assert_array_equal(mapped["x"][2:11], loaded["x"][2:11])
    np.testing.assert_array_equal(mapped["x"][-1], loaded["x"][12])
    np.testing.assert_array_equal(mapped["x"][np.array([], int)], loaded["x"][:0])
    with pytest.raises(IndexError):
        mapped["x"][np.array([13])]


def test_a_compressed_shard_is_refused_not_read_wrongly(tmp_path, monkeypatch):
    d = write_split(tmp_path, monkeypatch, [3], compress=True)
    shard = next(d.glob("*.npz"))
    assert zipfile.ZipFile(shard).getinfo("x.npy").compress_type == zipfile.ZIP_DEFLATED
    with pytest.raises(ValueError, match="compressed"):
        D.load_split("tiny", 8, psp=D.pp.PSP_V2, mmap=True)
