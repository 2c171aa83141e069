"""Shared by the tests that export a small PlateNet under the model contract (test_net_heads,
test_extra_blocks): export with two explained layers, check the contract, run it once in
onnxruntime for the unusable class. Needs torch, onnx and onnxruntime (callers skip first)."""
import numpy as np

LAYERS = ["middle", "last"]


def export_small(model, path, size: int, n_types: int):
    """Exports `model` to `path` with test metadata and returns the file's contract problems."""
    from plateqc_model import export as E
    types = [{"name": f"t{k}", "code": "111214", "meaning": "x"} for k in range(n_types)]
    md = E.build_metadata(input_size=size, layers=LAYERS, artifact_types=types,
                          threshold=0.5, commit="0" * 40)
    E.export_onnx(model, LAYERS, path, input_size=size, metadata=md)
    return E.check_contract(path)


def run_unusable(path, x: np.ndarray) -> dict:
    """Every output of the exported file on `x`, explained for class 1 (unusable)."""
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"image": x, "target_class": np.full(len(x), 1, np.int64)})
    return dict(zip([o.name for o in sess.get_outputs()], outs))


def assert_matches_torch(model, res: dict, x: np.ndarray):
    """The exported outputs `res` (from `run_unusable`) are the PyTorch model's on `x`: logits,
    artifact scores, `act_last` (the whole `last` stage) and a `grad_last` whose spatial mean
    is the class-1 logit's closed-form Grad-CAM weights (net.py `cam_weights`)."""
    import torch
    xt = torch.from_numpy(x)
    with torch.no_grad():
        cls, typ = model(xt)
        a = model.last(model.middle(model.early(model.stem(xt))))
    np.testing.assert_allclose(res["logits"], cls.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res["artifact_scores"], torch.sigmoid(typ).numpy(),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res["act_last"], a.numpy(), rtol=1e-4, atol=1e-5)
    want = model.cam_weights(*a.shape[1:]).detach().numpy()
    got = res["grad_last"].mean(axis=(2, 3))
    np.testing.assert_allclose(got, np.broadcast_to(want, got.shape), rtol=1e-3, atol=1e-6)
