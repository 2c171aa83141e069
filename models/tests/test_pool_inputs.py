"""Round 19's scale probe: `data.pool_inputs` averages k x k blocks of cached plates."""
import numpy as np
import pytest

from plateqc_model import data as D


def test_pool_is_the_block_mean_in_every_chunk():
    rng = np.random.default_rng(5)
    x = rng.random((7, 2, 8, 8)).astype(np.float16)
    # a chunk smaller than the set, not dividing it: every chunk, the last one short
    got = D.pool_inputs(x, 2, chunk=3)
    assert got.shape == (7, 2, 4, 4) and got.dtype == np.float16
    f = x.astype(np.float32)
    want = (f[:, :, 0::2, 0::2] + f[:, :, 1::2, 0::2] + f[:, :, 0::2, 1::2]
            + f[:, :, 1::2, 1::2]) / 4
    np.testing.assert_allclose(got.astype(np.float32), want, atol=1e-3)
    # the top-left block of plate 6, channel 1, by hand
    assert got[6, 1, 0, 0] == pytest.approx(float(f[6, 1, :2, :2].mean()), abs=1e-3)


def test_pool_one_is_the_input_and_uneven_sizes_are_refused():
    x = np.zeros((2, 2, 6, 6), np.float16)
    assert D.pool_inputs(x, 1) is x
    with pytest.raises(ValueError, match="do not pool by 4"):
        D.pool_inputs(x, 4)
