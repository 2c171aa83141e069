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


# --- 1.3.2: multi-layer mean/std statistics (ood.KIND) -------------------------------------
def _multi_stats(model, layers, x, seed=4):
    """Statistics of the 1.3.2 form fitted on the model's own features of x (as ood.fit)."""
    F = O.layer_features(model, x, layers=layers)
    st = {"kind": O.KIND, "layers": list(layers), "mu": {}, "W": {}, "scale": {}}
    for n in layers:
        mu, W, _, _ = O.whitener(F[n])
        st["mu"][n], st["W"][n] = mu, W
        st["scale"][n] = float(np.float32(np.percentile(O.distance(F[n], mu, W), 99)))
    return st


def test_layer_features_are_per_channel_mean_and_std():
    from plateqc_model.net import PlateNet
    torch.manual_seed(0)
    model = PlateNet(n_types=3, width=2).eval()
    x = np.random.default_rng(5).random((3, 2, 32, 32), dtype=np.float32)
    F = O.layer_features(model, x, layers=O.SCORE_LAYERS)
    widths = {"stem": 2, "early": 4, "middle": 8, "last": 16}     # channels at width 2
    assert list(F) == O.SCORE_LAYERS
    for n, c in widths.items():
        assert F[n].shape == (3, 2 * c) and F[n].dtype == np.float64
    got = {}
    h = model.stem.register_forward_hook(lambda _m, _i, o: got.__setitem__("a", o))
    with torch.no_grad():
        model(torch.from_numpy(x))
    h.remove()
    a = got["a"].double().numpy()
    np.testing.assert_allclose(F["stem"][:, :2], a.mean(axis=(2, 3)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(F["stem"][:, 2:], a.std(axis=(2, 3)), rtol=1e-4, atol=1e-6)


def test_multi_layer_torch_score_is_the_numpy_one():
    from plateqc_model.net import PlateNet
    torch.manual_seed(1)
    model = PlateNet(n_types=3, width=2).eval()
    rng = np.random.default_rng(6)
    x = rng.random((80, 2, 32, 32), dtype=np.float32)
    st = _multi_stats(model, O.SCORE_LAYERS, x)
    xt = rng.random((5, 2, 32, 32), dtype=np.float32)
    want = O.score(O.layer_features(model, xt, layers=O.SCORE_LAYERS), st)
    ex = E.Explained(model, [], E.cast_feature_stats(st, torch.float64))
    with torch.no_grad():
        acts = {}
        hs = [model.get_submodule(n).register_forward_hook(
            lambda _m, _i, o, _n=n: acts.__setitem__(_n, o.double())) for n in O.SCORE_LAYERS]
        model(torch.from_numpy(xt))
        for h in hs:
            h.remove()
        got = ex.feature_distance(acts).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # the max over layers of d_l / s_l, each d_l an RMS Mahalanobis distance
    Fx = O.layer_features(model, xt, layers=O.SCORE_LAYERS)
    per = O.layer_distances(Fx, st)
    assert per.shape == (5, 4)
    np.testing.assert_allclose(per.max(1), want)
    n = "middle"
    Wd = st["W"][n].astype(np.float64)
    f = Fx[n] - st["mu"][n]
    maha2 = np.einsum("nk,kl,nl->n", f, Wd.T @ Wd, f)
    np.testing.assert_allclose(per[:, 2] * st["scale"][n], np.sqrt(maha2 / f.shape[1]),
                               rtol=1e-9)


def test_exported_multi_layer_feature_distance_matches_numpy(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from plateqc_model.net import PlateNet
    torch.manual_seed(2)
    model = PlateNet(n_types=3, width=2).eval()
    rng = np.random.default_rng(7)
    st = _multi_stats(model, O.SCORE_LAYERS, rng.random((80, 2, 32, 32), dtype=np.float32))
    out = tmp_path / "tiny-multi.onnx"
    E.export_onnx(model, ["last"], out, input_size=32,
                  metadata=_md(feature_distance_threshold=1.2), feature_stats=st)
    assert E.check_contract(out) == []
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = rng.random((4, 2, 32, 32), dtype=np.float32)
    x[3] = 0.5                                      # a flat input: std 0 in every channel
    res = dict(zip([o.name for o in sess.get_outputs()],
                   sess.run(None, {"image": x, "target_class": np.full(4, -1, np.int64)})))
    assert res["feature_distance"].shape == (4,)
    assert np.isfinite(res["feature_distance"]).all()
    want = O.score(O.layer_features(model, x, layers=O.SCORE_LAYERS), st)
    np.testing.assert_allclose(res["feature_distance"], want, rtol=1e-4)
    # the last-layer member from the file's own act_last output
    a = torch.from_numpy(res["act_last"].astype(np.float64))
    d_last = O.distance(O.mean_std(a).numpy(), st["mu"]["last"], st["W"]["last"]) \
        / st["scale"]["last"]
    assert np.all(res["feature_distance"] >= d_last * (1 - 1e-4))


def test_stats_file_round_trip(tmp_path):
    from plateqc_model.net import PlateNet
    torch.manual_seed(3)
    model = PlateNet(n_types=3, width=2).eval()
    x = np.random.default_rng(8).random((60, 2, 32, 32), dtype=np.float32)
    st = _multi_stats(model, O.SCORE_LAYERS, x)
    flat = {"kind": np.array(O.KIND), "layers": np.array(st["layers"]),
            "threshold": np.float64(1.1), "percentile": np.float64(99),
            "weights_sha256": np.array("x"), "description": np.array(O.DESCRIPTION)}
    for n in st["layers"]:
        flat.update({f"mu_{n}": st["mu"][n], f"W_{n}": st["W"][n],
                     f"scale_{n}": np.float64(st["scale"][n]), f"shrinkage_{n}": np.float64(0)})
    O.save(flat, tmp_path / "s.npz")
    back = O.load(tmp_path / "s.npz")
    assert back["kind"] == O.KIND and back["layers"] == O.SCORE_LAYERS
    g = O.graph_stats(back)
    for n in O.SCORE_LAYERS:
        np.testing.assert_array_equal(g["mu"][n], st["mu"][n])
        assert g["scale"][n] == st["scale"][n]
    # and 1.3.1's file form still loads as the pooled kind
    old = {"layer": np.array("last"), "mu": np.zeros(4, np.float32),
           "W": np.eye(4, dtype=np.float32), "threshold": np.float64(1.6),
           "percentile": np.float64(99), "shrinkage": np.float64(0.01),
           "weights_sha256": np.array("x"), "description": np.array("d")}
    O.save(old, tmp_path / "o.npz")
    assert O.load(tmp_path / "o.npz")["kind"] == O.KIND_POOLED
    assert set(O.graph_stats(O.load(tmp_path / "o.npz"))) == {"layer", "mu", "W"}
