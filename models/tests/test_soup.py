"""The weight soup of round 14 (plateqc_model/soup.py): what it averages and what it refuses."""
import pytest

torch = pytest.importorskip("torch")

from plateqc_model.net import PlateNet  # noqa: E402
from plateqc_model.soup import average  # noqa: E402


def _net(seed):
    torch.manual_seed(seed)
    m = PlateNet(n_types=14, width=4)
    # give the BatchNorm statistics and counters distinct values, as after training
    for i, mod in enumerate(m.modules()):
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-1, 1)
            mod.running_var.uniform_(0.5, 2)
            mod.num_batches_tracked.fill_(100 * seed + i)
    return m.state_dict()


def test_uniform_average_of_every_float_tensor_and_counter_of_the_last():
    a, b, c = _net(1), _net(2), _net(3)
    s = average([a, b, c])
    assert list(s) == list(c)
    for k, v in s.items():
        if v.is_floating_point():
            want = (a[k].double() + b[k].double() + c[k].double()) / 3
            assert torch.allclose(v.double(), want, atol=1e-6), k
            assert v.dtype == c[k].dtype
        else:
            assert torch.equal(v, c[k]), k
    # the soup is a model the network loads and runs
    m = PlateNet(n_types=14, width=4)
    m.load_state_dict(s)
    cls, typ = m.eval()(torch.zeros(1, 2, 64, 64))
    assert cls.shape == (1, 2) and typ.shape == (1, 14)


def test_soup_of_one_model_with_itself_is_that_model():
    a = _net(5)
    s = average([a, a])
    assert all(torch.equal(s[k], a[k]) for k in a)


def test_members_of_other_shapes_or_tensors_are_refused():
    a = _net(1)
    torch.manual_seed(0)
    wider = PlateNet(n_types=14, width=8).state_dict()
    with pytest.raises(ValueError, match="is"):
        average([wider, a])
    fewer = {k: v for k, v in a.items() if not k.startswith("cls_head")}
    with pytest.raises(ValueError, match="other tensors"):
        average([fewer, a])
    with pytest.raises(ValueError):
        average([])
