"""A run stopped inside an epoch and resumed from its mid-epoch checkpoint is the same run as
one that never stopped: same batches, flips and dropout, so the same weights and losses. Round
20's run spans sessions whose ends do not fall on epoch boundaries."""
import json

import pytest

torch = pytest.importorskip("torch")   # the training environment has it, the test one not

from plateqc_model import data as D  # noqa: E402
from plateqc_model import train as T  # noqa: E402
from test_mmap_training import S, write  # noqa: E402


def run(out, extra, epochs=2):
    T.main(["--train", "tinytr", "--val", "tinyva", "--size", str(S), "--epochs", str(epochs),
            "--batch", "8", "--width", "4", "--threads", "1", "--dense-weight", "1.0",
            "--psp", D.pp.PSP_V2, "--seed", "7", "--out", str(out)] + extra)


def finished(out):
    return torch.load(out / "weights.pt"), json.loads((out / "train_result.json").read_text())


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "CACHE", tmp_path / "cache")
    write("tinytr", tmp_path, 20, 1)     # 40 rows: 5 or 6 batches of about 8 per epoch
    write("tinyva", tmp_path, 8, 2)
    return tmp_path


def assert_same_run(a, b):
    (w0, r0), (w1, r1) = finished(a), finished(b)
    assert w0.keys() == w1.keys()
    for name in w0:
        assert torch.equal(w0[name], w1[name]), name
    for h0, h1 in zip(r0["history"], r1["history"], strict=True):
        for k in ("cls", "typ", "sev", "attn", "dense", "val_auc"):
            assert h0[k] == h1[k], k
    assert r0["threshold"] == r1["threshold"]


def test_stopped_mid_epoch_and_resumed_is_the_same_run(tiny):
    run(tiny / "whole", [])
    # three invocations of 3, 3 and the rest: the stops fall inside epoch 0 and inside epoch 1
    out = tiny / "stopped"
    run(out, ["--stop-after-steps", "3"])
    c = torch.load(out / "checkpoint.pt", weights_only=False)
    assert (c["epoch"], c["step"]) == (0, 3) and c["history"] == []
    assert not (out / "train_result.json").exists()
    run(out, ["--resume", "--stop-after-steps", "3"])
    c = torch.load(out / "checkpoint.pt", weights_only=False)
    assert c["epoch"] == 1 and 0 < c["step"] and len(c["history"]) == 1
    run(out, ["--resume", "--checkpoint-steps", "2"])
    assert_same_run(tiny / "whole", out)


def test_periodic_checkpoints_do_not_change_the_run(tiny):
    run(tiny / "whole", [])
    run(tiny / "every2", ["--checkpoint-steps", "2"])
    assert_same_run(tiny / "whole", tiny / "every2")
    # and they are not part of the recipe: a run checkpointed without them resumes with them
    c = torch.load(tiny / "every2" / "checkpoint.pt", weights_only=False)
    assert "checkpoint_steps" not in c["args"] and "step" not in c["args"]


def test_mid_epoch_checkpoints_refuse_style_randomisation(tiny):
    with pytest.raises(SystemExit, match="not with --style-aug"):
        run(tiny / "x", ["--stop-after-steps", "2", "--style-aug", "0.5"])
