"""The optional `feature_distance` output (contract, export, ood.py). Needs torch and onnx: the
test environment has neither torch, so these skip there; run them with models/.venv."""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from plateqc_model import export as E  # noqa: E402
from plateqc_model import ood as O  # noqa: E402

TYPES = [{"name": f"t{k}", "code": "111214", "meaning": "x"} for k in range(3)]


def _md(**kw):
    return E.build_metadata(input_size=32, layers=["last"], artifact_types=TYPES, threshold=0.5,
                            commit="0" * 40, **kw)


def _contract_file(path, metadata, fd_shape=None):
    """A graph with the contract's inputs and outputs (Identity stand-ins), no export needed;
    check_contract reads only the interface and the metadata."""
    names = E.output_names(["last"]) + (["feature_distance"] if fd_shape is not None else [])
    shapes = {"logits": ["N", 2], "probabilities": ["N", 2], "artifact_scores": ["N", 3],
              "act_last": ["N", 8, 2, 2], "grad_last": ["N", 8, 2, 2],
              "feature_distance": fd_shape}
    img = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 2, 32, 32])
    tgt = helper.make_tensor_value_info("target_class", TensorProto.INT64, ["N"])
    nodes = [helper.make_node("Identity", ["image"], [n]) for n in names]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shapes[n]) for n in names]
    m = helper.make_model(helper.make_graph(nodes, "g", [img, tgt], outs),
                          opset_imports=[helper.make_opsetid("", 18)])
    for k, v in metadata.items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(m, str(path))
    return path


def test_check_contract_accepts_a_file_with_and_without_feature_distance(tmp_path):
    assert E.check_contract(_contract_file(tmp_path / "a.onnx", _md())) == []
    md = _md(feature_distance_threshold=1.6, feature_distance_description="a distance")
    assert md["plateqc.feature_distance_threshold"] == "1.6"
    assert E.check_contract(_contract_file(tmp_path / "b.onnx", md, ["N"])) == []


def test_check_contract_refuses_a_bad_feature_distance(tmp_path):
    # without its threshold
    p = E.check_contract(_contract_file(tmp_path / "c.onnx", _md(), ["N"]))
    assert any("feature_distance_threshold" in x for x in p), p
    # threshold not a finite number > 0
    for bad in ("0", "-1.0", "nan", "inf", "x"):
        md = _md()
        md["plateqc.feature_distance_threshold"] = bad
        p = E.check_contract(_contract_file(tmp_path / "d.onnx", md, ["N"]))
        assert any("not a finite number" in x for x in p), (bad, p)
    # not rank 1
    md = _md(feature_distance_threshold=1.6)
    p = E.check_contract(_contract_file(tmp_path / "e.onnx", md, ["N", 1]))
    assert any("not [N]" in x for x in p), p
    with pytest.raises(ValueError):
        _md(feature_distance_threshold=math.inf)


def _stats(dims, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(400, dims)) @ rng.normal(size=(dims, dims)) * 0.3 + 1.0
    cov, _ = O.ledoit_wolf(X)
    W = np.linalg.inv(np.linalg.cholesky(cov))
    return X.mean(0).astype(np.float32), W.astype(np.float32)


def test_ledoit_wolf_matches_its_definition():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 5)) * np.array([1, 2, 3, 0.5, 0.1])
    cov, shrink = O.ledoit_wolf(X)
    n, p = X.shape
    Xc = X - X.mean(0)
    S = Xc.T @ Xc / n
    m = np.trace(S) / p
    d2 = np.sum((S - m * np.eye(p)) ** 2) / p
    b2 = sum(np.sum((np.outer(x, x) - S) ** 2) for x in Xc) / n ** 2 / p
    want = min(b2, d2) / d2
    assert shrink == pytest.approx(want, rel=1e-10)
    assert np.allclose(cov, (1 - want) * S + want * m * np.eye(p))


def test_the_torch_distance_is_the_numpy_one():
    rng = np.random.default_rng(2)
    a = rng.random((5, 8, 4, 4))
    mu, W = _stats(16)
    ex = E.Explained(torch.nn.Identity(), [], {"layer": "", "mu": mu, "W": W})
    got = ex.feature_distance(torch.from_numpy(a)).numpy()        # float64 path
    f = np.concatenate([a.max(axis=(2, 3)), a.mean(axis=(2, 3))], axis=1)
    want = O.distance(f, mu, W)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # = the Mahalanobis distance over sqrt(D), Sigma^-1 = W^T W
    Wd = W.astype(np.float64)
    maha2 = np.einsum("nk,kl,nl->n", f - mu, Wd.T @ Wd, f - mu)
    np.testing.assert_allclose(want, np.sqrt(maha2 / 16), rtol=1e-10)


def test_exported_feature_distance_matches_numpy_on_its_own_activation(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from plateqc_model.net import PlateNet
    torch.manual_seed(0)
    model = PlateNet(n_types=3, width=2).eval()
    mu, W = _stats(32)
    out = tmp_path / "tiny.onnx"
    E.export_onnx(model, ["last"], out, input_size=32,
                  metadata=_md(feature_distance_threshold=1.5),
                  feature_stats={"layer": "last", "mu": mu, "W": W})
    assert E.check_contract(out) == []
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).random((4, 2, 32, 32), dtype=np.float32)
    res = dict(zip([o.name for o in sess.get_outputs()],
                   sess.run(None, {"image": x, "target_class": np.full(4, -1, np.int64)})))
    assert res["feature_distance"].shape == (4,)
    a = res["act_last"].astype(np.float64)
    f = np.concatenate([a.max(axis=(2, 3)), a.mean(axis=(2, 3))], axis=1)
    np.testing.assert_allclose(res["feature_distance"], O.distance(f, mu, W), rtol=1e-5)
    # and the PyTorch features ood.py fits on are the same ones
    np.testing.assert_allclose(O.features(model, x), f, rtol=1e-5, atol=1e-6)
