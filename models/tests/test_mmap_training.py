"""Round 20: a run that reads its training plates in place (`train.py --mmap`) is the same run
as one that loads them: same batches, same weights."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")   # the training environment has it, the test one not

from plateqc_model import data as D  # noqa: E402
from plateqc_model import train as T  # noqa: E402

S = 64


def write(split, root, n_scenes, seed):
    """A tiny cached split in the shard format: scenes with an artifact followed by their
    clean twin (same pair id), in two shards, so batches cross shard boundaries."""
    d = D.split_dir(split, S, D.pp.PSP_V2)
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    k = len(D.TYPE_NAMES)
    rows = 2 * n_scenes
    y = np.tile([1, 0], n_scenes).astype(np.uint8)
    types = np.zeros((rows, k), np.uint8)
    types[y == 1, rng.integers(0, k, n_scenes)] = 1
    mask = np.zeros((rows, S, S), bool)
    mask[y == 1, 10:30, 12:40] = True
    tmask = np.zeros((rows, k, D.TMASK, D.TMASK), bool)
    tmask[y == 1, :, 5:15, 6:20] = types[y == 1][:, :, None, None].astype(bool)
    arrays = {"x": rng.random((rows, 2, S, S)).astype(np.float16), "y": y, "types": types,
              "sev": types.astype(np.float32) * 2, "mask": np.packbits(mask.reshape(rows, -1),
                                                                       axis=1),
              "tmask": np.packbits(tmask, axis=-1),
              "rect": np.tile(np.array([0, 0, S, S], np.int32), (rows, 1)),
              "pair": np.repeat(np.arange(n_scenes), 2).astype(np.int64)}
    cut = rows // 2 + 1            # an odd cut: one pair straddles the two shards
    for lo, hi in ((0, cut), (cut, rows)):
        np.savez(d / f"{lo:06d}-{hi:06d}.npz", **{n: v[lo:hi] for n, v in arrays.items()})


def run(out, extra):
    T.main(["--train", "tinytr", "--val", "tinyva", "--size", str(S), "--epochs", "1",
            "--batch", "8", "--width", "4", "--threads", "1", "--dense-weight", "1.0",
            "--psp", D.pp.PSP_V2, "--seed", "7", "--out", str(out)] + extra)
    return torch.load(out / "weights.pt"), json.loads((out / "train_result.json").read_text())


def test_mapped_and_loaded_training_are_the_same_run(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "CACHE", tmp_path / "cache")
    write("tinytr", tmp_path, 20, 1)
    write("tinyva", tmp_path, 8, 2)
    w0, r0 = run(tmp_path / "loaded", [])
    w1, r1 = run(tmp_path / "mapped", ["--mmap"])
    assert w0.keys() == w1.keys()
    for name in w0:
        assert torch.equal(w0[name], w1[name]), name
    assert r0["history"][0]["cls"] == r1["history"][0]["cls"]
    assert r1["args"]["mmap"] and not r0["args"]["mmap"]


def test_mmap_refuses_what_rewrites_loaded_plates(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "CACHE", tmp_path / "cache")
    write("tinytr", tmp_path, 4, 1)
    write("tinyva", tmp_path, 4, 2)
    with pytest.raises(SystemExit, match="not with --mmap"):
        run(tmp_path / "x", ["--mmap", "--pool", "2"])
