"""MixStyle across training families (train.MixStyle, plan-1.3.md round 12)."""
import argparse

import numpy as np
import pytest

torch = pytest.importorskip("torch")   # the training environment has it, the test one not

from plateqc_model import data as D  # noqa: E402
from plateqc_model.net import PlateNet  # noqa: E402
from plateqc_model.train import MixStyle, recipe_args  # noqa: E402


def batch():
    # three families, each row paired with a twin (pair ids as load_split offsets them)
    fam = np.array([0, 0, 1, 1, 2, 2, 0, 0])
    pair = fam * D.PAIR_STRIDE + np.array([5, 5, 7, 7, 9, 9, 11, 11])
    return fam, pair


def test_partners_come_from_another_family_and_twins_share_the_style():
    fam, pair = batch()
    mix = MixStyle(PlateNet(width=4), p=1.0)
    for seed in range(20):
        mix.draw(fam, pair, np.random.default_rng(seed))
        idx, lam = mix.plan
        idx, lam = idx.numpy(), lam.numpy().ravel()
        assert (fam[idx] != fam).all()
        for a, b in ((0, 1), (2, 3), (4, 5), (6, 7)):
            assert idx[a] == idx[b] and lam[a] == lam[b]
        assert ((lam >= 0) & (lam <= 1)).all()


def test_one_family_batch_mixes_within_it():
    fam = np.zeros(4, np.int64)
    pair = np.array([1, 1, 2, 2])
    mix = MixStyle(PlateNet(width=4), p=1.0)
    mix.draw(fam, pair, np.random.default_rng(0))
    assert mix.plan is not None and set(mix.plan[0].numpy()) <= {0, 2}


def test_mixed_statistics_are_the_convex_mix_and_eval_is_untouched():
    torch.manual_seed(0)
    model = PlateNet(width=4)
    fam, pair = batch()
    x = torch.randn(8, 2, 64, 64)
    mix = MixStyle(model, p=1.0)
    hooks = mix.hooks()
    try:
        mix.draw(fam, pair, np.random.default_rng(3))
        plan = mix.plan
        with torch.no_grad():
            model.eval()
            before = model.stem(x)
            mix.plan = None
            assert torch.equal(model.stem(x), before)         # eval: the plan is not used
            model.train()                                     # (BatchNorm: batch statistics)
            plain = model.stem(x)
            mix.plan = plan
            mixed = model.stem(x)
        idx, lam = plan
        mu = plain.mean(dim=(2, 3), keepdim=True)
        want = lam * mu + (1 - lam) * mu[idx]
        assert torch.allclose(mixed.mean(dim=(2, 3), keepdim=True), want, atol=1e-4)
        sig = (plain.var(dim=(2, 3), keepdim=True) + 1e-6).sqrt()
        want_sig = lam * sig + (1 - lam) * sig[idx]
        got_sig = (mixed.var(dim=(2, 3), keepdim=True) + 1e-6).sqrt()
        # a channel that is constant has no spread to give (its normalised map is 0)
        live = sig > 0.1
        assert torch.allclose(got_sig[live], want_sig[live], rtol=1e-3, atol=1e-4)
    finally:
        for h in hooks:
            h.remove()


def test_off_draws_nothing_and_keeps_old_recipes_resumable():
    rng = np.random.default_rng(1)
    state = rng.bit_generator.state
    fam, pair = batch()
    mix = MixStyle(PlateNet(width=4), p=0.0)
    mix.draw(fam, pair, rng)
    assert mix.plan is None and rng.bit_generator.state == state
    a = argparse.Namespace(train="t", mixstyle=0.0, resume=True, init=None, style_aug=0.0,
                           psp=D.pp.PSP_V2)
    assert "mixstyle" not in recipe_args(a)
    a.mixstyle = 0.5
    assert recipe_args(a)["mixstyle"] == 0.5
