"""Round 18's deepened PlateNet (net.py `extra_blocks`; plan-1.3.md): the residual blocks start
as the identity, leave every other random draw as it was, are recognised from a weights file,
take a shallower run's weights as a start (never the reverse) and export under the unchanged
contract with the exported gradient still the class logit's. Needs torch (skips in the
torch-free test environment; run with models/.venv)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from plateqc_model.net import PlateNet, build, extra_blocks_of  # noqa: E402
from plateqc_model.train import DenseHeads, init_from  # noqa: E402

K, W, S = 5, 2, 64


def _trained_bn(m: torch.nn.Module, seed: int):
    """Non-trivial BatchNorm statistics and scales, as a trained network has, so that identity
    is not an accident of fresh BatchNorms."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                n = mod.num_features
                mod.running_mean.copy_(torch.rand(n, generator=g) * 0.2)
                mod.running_var.copy_(0.5 + torch.rand(n, generator=g))
                mod.bias.copy_(torch.rand(n, generator=g) * 0.1)


def test_a_deepened_network_given_shallow_weights_computes_what_the_shallow_one_did():
    torch.manual_seed(0)
    shallow = PlateNet(n_types=K, width=W)
    _trained_bn(shallow, 1)
    deep = PlateNet(n_types=K, width=W, extra_blocks=2)
    init_from(deep, None, None, {"model": shallow.state_dict()})
    x = torch.rand(3, 2, S, S)
    shallow.eval(), deep.eval()
    for a, b in zip(shallow(x), deep(x)):
        torch.testing.assert_close(a, b)
    # the blocks are really there and really train: after one step the outputs part
    deep.train()
    opt = torch.optim.SGD(deep.parameters(), lr=0.5)
    cls, typ = deep(x)
    (cls[:, 1].sum() + typ.sum()).backward()
    assert deep.last[2].bn.weight.grad.abs().sum() > 0
    opt.step()
    deep.eval()
    assert not torch.allclose(deep(x)[0], shallow(x)[0])


def test_extra_blocks_leave_every_other_random_draw_as_it_was():
    torch.manual_seed(7)
    a = PlateNet(n_types=K, width=W)
    after_a = torch.rand(4)
    torch.manual_seed(7)
    b = PlateNet(n_types=K, width=W, extra_blocks=1)
    after_b = torch.rand(4)
    # the same batches and dropout draws follow, and every shared layer starts the same
    assert torch.equal(after_a, after_b)
    sb = b.state_dict()
    for k, v in a.state_dict().items():
        assert torch.equal(sb[k], v), k
    # the block's convolution is drawn from its own stream, not left at zero
    assert b.middle[2].conv.weight.abs().sum() > 0
    assert torch.all(b.middle[2].bn.weight == 0)


def test_build_recognises_the_depth_from_the_weights():
    for n in (0, 1, 2):
        torch.manual_seed(n)
        src = PlateNet(n_types=K, width=W, extra_blocks=n)
        _trained_bn(src, n)
        with torch.no_grad():
            for mod in src.modules():
                if isinstance(mod, torch.nn.BatchNorm2d):
                    mod.weight.uniform_(0.5, 1.5)
        state = src.state_dict()
        assert extra_blocks_of(state) == n
        m = build(state, W, K)
        assert m.extra_blocks == n
        x = torch.rand(1, 2, S, S)
        torch.testing.assert_close(m(x)[0], src.eval()(x)[0])


def test_a_shallow_run_cannot_start_from_a_deeper_checkpoint():
    deep = PlateNet(n_types=K, width=W, extra_blocks=1)
    with pytest.raises(SystemExit):
        init_from(PlateNet(n_types=K, width=W), None, None, {"model": deep.state_dict()})
    # nor a run from a checkpoint of another width, whose tensors do not fit
    with pytest.raises(RuntimeError):
        init_from(PlateNet(n_types=K, width=W), None, None,
                  {"model": PlateNet(n_types=K, width=W + 1).state_dict()})


def test_dense_heads_and_severity_term_carry_over_to_a_deepened_run():
    torch.manual_seed(3)
    shallow = PlateNet(n_types=K, width=W)
    dense, sev = DenseHeads(W, K), torch.nn.Linear(2 * 8 * W, 2 * K)
    ckpt = {"model": shallow.state_dict(), "dense": dense.state_dict(),
            "sev_head": sev.state_dict()}
    torch.manual_seed(4)
    deep = PlateNet(n_types=K, width=W, extra_blocks=1)
    d2, s2 = DenseHeads(W, K), torch.nn.Linear(2 * 8 * W, 2 * K)
    init_from(deep, s2, d2, ckpt)
    assert torch.equal(d2.last.weight, dense.last.weight)
    assert torch.equal(s2.weight, sev.weight)


def test_deepened_model_exports_under_the_contract_and_onnx_agrees(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx_small import assert_matches_torch, export_small, run_unusable
    torch.manual_seed(5)
    m = PlateNet(n_types=K, width=W, extra_blocks=1)
    _trained_bn(m, 5)
    with torch.no_grad():
        m.last[2].bn.weight.fill_(0.7)      # a block that has moved away from the identity
    m.eval()
    out = tmp_path / "deep.onnx"
    assert export_small(m, out, S, K) == []
    x = np.random.default_rng(6).random((2, 2, S, S), dtype=np.float32)
    res = run_unusable(out, x)
    # `act_last` is the output of the whole stage, residual block included, and its gradient
    # the class-1 logit's
    assert_matches_torch(m, res, x)


def test_the_export_check_finds_the_blocks_relus_and_passes(tmp_path):
    """verify.py's branch-matched reference pairs the graph's ReLU nodes with the model's ReLU
    modules in call order, so a block's ReLU must be a module the check can see."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx_small import LAYERS, export_small
    from plateqc_model.verify import verify
    torch.manual_seed(8)
    m = PlateNet(n_types=K, width=W, extra_blocks=1)
    _trained_bn(m, 8)
    with torch.no_grad():
        m.middle[2].bn.weight.fill_(0.6)
        m.last[2].bn.weight.fill_(0.8)
    m.eval()
    assert sum(isinstance(x, torch.nn.ReLU) for x in m.modules()) == 9
    out = tmp_path / "deep.onnx"
    assert export_small(m, out, S, K) == []
    images = np.random.default_rng(9).random((4, 2, S, S), dtype=np.float32)
    res = verify(out, m, LAYERS, images, tol=1e-4, float64_graph=False)
    assert res["pass"], res
