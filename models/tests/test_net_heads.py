"""The two heads of PlateNet (net.py; plan-1.3.md round 15): what the maps head computes, its
closed-form Grad-CAM weights, loading by the weights file, starting a maps run from a pooled
run, and export under the unchanged contract. Needs torch (skips in the torch-free test
environment; run with models/.venv)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from plateqc_model.net import PlateNet, build, head_of  # noqa: E402
from plateqc_model.train import DenseHeads, cam_last, init_from  # noqa: E402

K, W, S = 5, 2, 64


def _maps(seed=0):
    torch.manual_seed(seed)
    m = PlateNet(n_types=K, width=W, head="maps")
    with torch.no_grad():
        m.type_scale.uniform_(-1, 1)
        m.type_bias.uniform_(-1, 1)
    return m.eval()


def _last(model, x):
    return model.last(model.middle(model.early(model.stem(x))))


def test_maps_head_logits_come_only_from_the_type_maps():
    m = _maps()
    x = torch.rand(3, 2, S, S)
    cls, typ = m(x)
    maps = m.type_map(_last(m, x))
    mx, mean = maps.amax(dim=(2, 3)), maps.mean(dim=(2, 3))
    want_typ = mx * m.type_scale[:, 0] + mean * m.type_scale[:, 1] + m.type_bias
    torch.testing.assert_close(typ, want_typ)
    torch.testing.assert_close(cls, m.cls_head(torch.cat([mx, mean], 1)))


@pytest.mark.parametrize("head", ["pooled", "maps"])
def test_closed_form_cam_weights_are_the_spatial_mean_of_the_gradient(head):
    torch.manual_seed(1)
    m = PlateNet(n_types=K, width=W, head=head).eval()
    x = torch.rand(2, 2, S, S)
    a = _last(m, x).detach().requires_grad_(True)
    if head == "maps":
        maps = m.type_map(a)
        cls = m.cls_head(torch.cat([maps.amax(dim=(2, 3)), maps.mean(dim=(2, 3))], 1))
    else:
        cls = m.cls_head(torch.cat([a.amax(dim=(2, 3)), a.mean(dim=(2, 3))], 1))
    cls[:, 1].sum().backward()
    want = a.grad.mean(dim=(2, 3))                                 # [N, C]
    got = m.cam_weights(*a.shape[1:])
    for n in range(a.shape[0]):
        torch.testing.assert_close(got, want[n], atol=1e-6, rtol=1e-5)
    cam = cam_last(m, a.detach())
    torch.testing.assert_close(cam, torch.einsum("nkhw,k->nhw", a.detach(), got))


def test_build_recognises_the_head_from_the_weights():
    for head in ("pooled", "maps"):
        torch.manual_seed(2)
        src = PlateNet(n_types=K, width=W, head=head)
        state = src.state_dict()
        assert head_of(state) == head
        m = build(state, W, K)
        assert m.head == head and not m.training
        x = torch.rand(1, 2, S, S)
        torch.testing.assert_close(m(x)[0], src.eval()(x)[0])
    with pytest.raises(ValueError):
        PlateNet(head="dense")


def test_a_maps_run_starts_from_a_pooled_run_backbone_and_mask_head():
    torch.manual_seed(3)
    pooled = PlateNet(n_types=K, width=W)
    dense = DenseHeads(W, K)
    sev = torch.nn.Linear(2 * 8 * W, 2 * K)
    ckpt = {"model": pooled.state_dict(), "dense": dense.state_dict(),
            "sev_head": sev.state_dict(), "epoch": 5}
    torch.manual_seed(4)
    m = PlateNet(n_types=K, width=W, head="maps")
    d2 = DenseHeads(W, K, m.type_map)
    sev2 = torch.nn.Linear(2 * 8 * W, 2 * K)
    init_from(m, sev2, d2, ckpt)
    for k, v in pooled.state_dict().items():
        if not k.startswith(("cls_head", "type_head")):
            assert torch.equal(m.state_dict()[k], v), k
    assert torch.equal(m.type_map.weight, dense.last.weight)
    assert torch.equal(m.type_map.bias, dense.last.bias)
    assert torch.equal(d2.middle.weight, dense.middle.weight)
    assert torch.equal(sev2.weight, sev.weight)
    # the dense term of a maps run trains the model's own maps, and its state is `middle` only
    assert set(d2.state_dict()) == {"middle.weight", "middle.bias"}
    feats = {"middle": torch.rand(2, 4 * W, 32, 32), "last": torch.rand(2, 8 * W, 16, 16)}
    d2.loss(feats, torch.zeros(2, K, 32, 32)).backward()
    assert m.type_map.weight.grad is not None and m.type_map.weight.grad.abs().sum() > 0
    # and a pooled run cannot start from a maps checkpoint
    with pytest.raises(SystemExit):
        init_from(PlateNet(n_types=K, width=W), None, None, {"model": m.state_dict()})


def test_maps_model_exports_under_the_contract_and_onnx_agrees(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx_small import assert_matches_torch, export_small, run_unusable
    m = _maps(5)
    out = tmp_path / "maps.onnx"
    assert export_small(m, out, S, K) == []
    x = np.random.default_rng(6).random((2, 2, S, S), dtype=np.float32)
    res = run_unusable(out, x)
    # the exported gradient at `last` is the class-1 logit's, through the maps
    assert_matches_torch(m, res, x)
