"""Check an exported plateqc ONNX file against PyTorch autograd in float64.

Three comparisons, every plate, target_class in (-1, 0, 1); relative error of an output for one
plate is  max|got - ref| / max|ref|,  reported as the maximum over plates:

A. shipped file, onnxruntime float32  vs  float64 autograd of the unfolded PyTorch model
   ("plain").  Reported; not the gate for the gradients, see B.
B. shipped file, onnxruntime float32  vs  float64 autograd of the unfolded PyTorch model whose
   ReLU kinks take the branch the float32 run took ("branch-matched").  ReLU is not
   differentiable at 0: where a pre-activation lies within float32 rounding of 0, float32 and
   float64 may land on different sides, and the gradient of everything upstream then differs by
   one whole path (a bounded, O(1) jump), although both are exact gradients of their own
   forward pass.  B reads every ReLU input of the float32 run (extra graph outputs on an
   in-memory copy), gives the float64 reference the same 0/1 masks and counts the elements
   whose branch differs.  Such a "flip" is accepted only at a pre-activation that is itself
   within the tolerance of 0 (|z64| <= tol * max|z64| of that layer and plate); any other
   flip fails the check.
C. a float64 copy of the *same* graph (the shipped nodes, initializers widened to float64, no
   re-export) evaluated by onnx.reference.ReferenceEvaluator  vs  float64 autograd of the
   PyTorch model with the same BatchNorm-folded weights (float32-rounded as in the file,
   widened to float64), plain.  Both sides then compute the same function in float64, so
   this checks the exported backward graph itself (transposed convolutions, ReLU masks,
   pooling backward) with no float32 rounding in the way.  Also reported, not gated:
   C', the float64 graph against the unfolded float64 model (as A).
The file passes when A's forward outputs, B's gradients and all of C are within tol, every
flip is within tolerance of a kink, and batch 1 and batch 4 agree.

The optional output ``feature_distance`` (when the file has it, ``feature_stats`` must be given:
what it was exported with, either form of ``export.Explained``) is a forward output: the
references compute it from their own float64 activations with the same statistics (the float32
values the file holds, widened to float64), and it is gated like the other forward outputs.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parents[1]   # models/

from plateqc_model import export as E

FORWARD_OUTPUTS = ("logits", "probabilities", "artifact_scores")


# ---------------------------------------------------------------------------
# ReLU inputs of the onnx graph and of the torch model
# ---------------------------------------------------------------------------
def relu_inputs(model_proto) -> list[str]:
    """Names of the tensors entering the Relu nodes of the graph, in graph (forward) order."""
    return [n.input[0] for n in model_proto.graph.node if n.op_type == "Relu"]


def with_extra_outputs(model_proto, names: list[str]):
    """Copy of the model with the given intermediate tensors added as float graph outputs."""
    import onnx
    from onnx import helper
    m = copy.deepcopy(model_proto)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))
    return m


class ReluControl:
    """Forward hooks on every nn.ReLU of a model, indexed by call order within one forward:
    records the ReLU inputs and, when masks are set, replaces ReLU(z) by z * mask (same value
    away from flips; the derivative is the given mask)."""

    def __init__(self, model: torch.nn.Module):
        self.masks: list[torch.Tensor] | None = None
        self.inputs: list[torch.Tensor] = []
        self.handles = [m.register_forward_hook(self._hook) for m in model.modules()
                        if isinstance(m, torch.nn.ReLU)]

    def _hook(self, _mod, inp, out):
        k = len(self.inputs)
        z = inp[0]
        self.inputs.append(z.detach())
        if self.masks is not None:
            return z * self.masks[k]
        return out

    def reset(self, masks=None):
        self.inputs = []
        self.masks = masks

    def remove(self):
        for h in self.handles:
            h.remove()


# ---------------------------------------------------------------------------
# float64 copy of the graph and a transposed convolution for the reference evaluator
# ---------------------------------------------------------------------------
def float64_copy(model_proto):
    """The same nodes with float32 initializers, inputs, outputs and casts widened to float64."""
    from onnx import TensorProto, numpy_helper
    m = copy.deepcopy(model_proto)
    g = m.graph
    for i, t in enumerate(g.initializer):
        if t.data_type == TensorProto.FLOAT:
            g.initializer[i].CopyFrom(numpy_helper.from_array(
                numpy_helper.to_array(t).astype(np.float64), t.name))
    for v in list(g.input) + list(g.output) + list(g.value_info):
        if v.type.tensor_type.elem_type == TensorProto.FLOAT:
            v.type.tensor_type.elem_type = TensorProto.DOUBLE
    for n in g.node:
        for a in n.attribute:
            if a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.DOUBLE
            if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(
                    numpy_helper.to_array(a.t).astype(np.float64), a.t.name))
    return m


def _conv_transpose_class():
    from onnx.reference.op_run import OpRun

    class ConvTranspose(OpRun):
        """2-D ConvTranspose as the ONNX spec defines it (explicit pads), one kernel tap at a
        time: input pixel i lands on full-output index i*stride + tap*dilation; the full output
        (with output_padding at the end) is then cropped by the pads.  The reference
        evaluator's own implementation is correct but loops per pixel in Python."""

        def _run(self, X, W, B=None, auto_pad=None, dilations=None, group=None,
                 kernel_shape=None, output_padding=None, output_shape=None, pads=None,
                 strides=None):
            if X.ndim != 4 or (auto_pad not in (None, "NOTSET")) or output_shape is not None:
                raise NotImplementedError("ConvTranspose: only 2-D with explicit pads")
            dil = list(dilations or [1, 1])
            st = list(strides or [1, 1])
            opad = list(output_padding or [0, 0])
            pd = list(pads or [0, 0, 0, 0])
            g = int(group or 1)
            n, cin, h, w = X.shape
            cog, kh, kw = W.shape[1], W.shape[2], W.shape[3]
            cig = cin // g
            fh = st[0] * (h - 1) + (kh - 1) * dil[0] + 1 + opad[0]
            fw = st[1] * (w - 1) + (kw - 1) * dil[1] + 1 + opad[1]
            Y = np.zeros((n, g * cog, fh, fw), dtype=X.dtype)
            for gi in range(g):
                xs = X[:, gi * cig:(gi + 1) * cig]
                ws = W[gi * cig:(gi + 1) * cig]
                for a in range(kh):
                    for b in range(kw):
                        part = np.tensordot(xs, ws[:, :, a, b], axes=([1], [0]))  # n,h,w,o
                        y0, x0 = a * dil[0], b * dil[1]
                        Y[:, gi * cog:(gi + 1) * cog,
                          y0:y0 + st[0] * (h - 1) + 1:st[0],
                          x0:x0 + st[1] * (w - 1) + 1:st[1]] += part.transpose(0, 3, 1, 2)
            Y = Y[:, :, pd[0]:fh - pd[2], pd[1]:fw - pd[3]]
            if B is not None:
                Y = Y + B.reshape(1, -1, 1, 1)
            return (np.ascontiguousarray(Y),)

    return ConvTranspose


# ---------------------------------------------------------------------------
def _rel(got: np.ndarray, ref: np.ndarray) -> float:
    """max over samples of max|got - ref| / max|ref| (absolute when ref is all zero)"""
    worst = 0.0
    for j in range(len(ref)):
        den = np.abs(ref[j]).max()
        err = np.abs(got[j] - ref[j]).max()
        worst = max(worst, float(err / den if den > 0 else err))
    return worst


def verify(onnx_path, model: torch.nn.Module, layers: list[str], images: np.ndarray,
           tol: float = 1e-5, float64_graph: bool = True, feature_stats: dict | None = None
           ) -> dict:
    import onnx
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    proto = onnx.load(str(onnx_path))
    has_fd = any(o.name == E.FEATURE_DISTANCE for o in proto.graph.output)
    if has_fd and feature_stats is None:
        raise ValueError(f"{onnx_path} has the output {E.FEATURE_DISTANCE}: verify needs the "
                         "feature_stats it was exported with")
    if not has_fd:
        feature_stats = None
    if feature_stats is not None:
        # the values the file holds (float32), widened: both sides use the same numbers
        feature_stats = E.cast_feature_stats(feature_stats, torch.float64)
    names = E.output_names(layers, has_fd)
    fs = feature_stats
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    relu_names = relu_inputs(proto)
    probe = ort.InferenceSession(with_extra_outputs(proto, relu_names).SerializeToString(),
                                 providers=["CPUExecutionProvider"])
    ref64 = None
    if float64_graph:
        ref64 = ReferenceEvaluator(float64_copy(proto), new_ops=[_conv_transpose_class()])
    ref_model = copy.deepcopy(model).double().eval()
    folded_model = E.fold_batchnorm(model)[0].double().eval() if float64_graph else None
    ctl = ReluControl(ref_model)
    plain = {n: 0.0 for n in names}
    matched = {n: 0.0 for n in names}
    graph64 = {n: 0.0 for n in names}
    graph64_unfolded = {n: 0.0 for n in names}
    flips = {"count": 0, "elements": 0, "max_rel_preact": 0.0, "outside_tol": 0,
             "per_relu": [0] * len(relu_names), "where": []}
    argmax_flips = 0
    n = len(images)
    try:
        for tc in (-1, 0, 1):
            for i0 in range(0, n, 4):
                x = images[i0:i0 + 4].astype(np.float32)
                k = len(x)
                tgt = np.full(k, tc, np.int64)
                outs = probe.run(names + relu_names, {"image": x, "target_class": tgt})
                got = dict(zip(names, outs[:len(names)]))
                z32 = outs[len(names):]
                # explain the class the float32 run chose, so a near-tie cannot mix classes
                chosen = got["logits"].argmax(1) if tc == -1 else tgt
                x64 = torch.from_numpy(x.astype(np.float64))
                ct = torch.from_numpy(chosen)
                # A: plain float64 autograd (also records the float64 ReLU inputs)
                ctl.reset()
                ref = {a: b.numpy() for a, b in E.explain_torch(ref_model, layers, x64,
                                                                  ct, fs).items()}
                z64 = [z.numpy() for z in ctl.inputs]
                if len(z64) != len(z32) or any(a.shape != b.shape for a, b in zip(z64, z32)):
                    raise RuntimeError(
                        f"cannot pair the graph's {len(z32)} Relu nodes with the model's "
                        f"{len(z64)} ReLU calls; branch-matched check impossible")
                if tc == -1:
                    argmax_flips += int((ref["logits"].argmax(1) != chosen).sum())
                for nm in names:
                    plain[nm] = max(plain[nm], _rel(got[nm].astype(np.float64), ref[nm]))
                # B: float64 autograd with the float32 run's ReLU branches
                masks = []
                for r, (a, b) in enumerate(zip(z32, z64)):
                    m32, m64 = a > 0, b > 0
                    diff = m32 != m64
                    if diff.any():
                        scale = np.abs(b).reshape(len(b), -1).max(1).reshape(-1, 1, 1, 1)
                        relz = (np.abs(b) / np.maximum(scale, 1e-300))[diff]
                        flips["count"] += 1
                        flips["elements"] += int(diff.sum())
                        flips["per_relu"][r] += int(diff.sum())
                        flips["max_rel_preact"] = max(flips["max_rel_preact"],
                                                      float(relz.max()))
                        flips["outside_tol"] += int((relz > tol).sum())
                        for pos in np.argwhere(diff)[:5]:
                            j = int(pos[0])
                            flips["where"].append({
                                "plate": i0 + j, "target": int(tc), "relu": r,
                                "index": [int(v) for v in pos[1:]],
                                "z64": float(b[tuple(pos)]), "z32": float(a[tuple(pos)]),
                                "z64_rel": float(abs(b[tuple(pos)]) / scale[j, 0, 0, 0])})
                    masks.append(torch.from_numpy(m32.astype(np.float64)))
                ctl.reset(masks)
                refm = {a: b.numpy() for a, b in E.explain_torch(ref_model, layers, x64,
                                                                   ct, fs).items()}
                ctl.reset()
                for nm in names:
                    matched[nm] = max(matched[nm], _rel(got[nm].astype(np.float64), refm[nm]))
                # C: float64 copy of the same graph, plain float64 autograd
                if ref64 is not None:
                    o64 = dict(zip(names, ref64.run(names, {"image": x.astype(np.float64),
                                                             "target_class": tgt})))
                    ch64 = o64["logits"].argmax(1) if tc == -1 else tgt
                    ref_f = {a: b.numpy() for a, b in E.explain_torch(
                        folded_model, layers, x64, torch.from_numpy(ch64), fs).items()}
                    ref_c = ref if np.array_equal(ch64, chosen) else {
                        a: b.numpy() for a, b in E.explain_torch(
                            ref_model, layers, x64, torch.from_numpy(ch64), fs).items()}
                    for nm in names:
                        graph64[nm] = max(graph64[nm], _rel(o64[nm], ref_f[nm]))
                        graph64_unfolded[nm] = max(graph64_unfolded[nm],
                                                   _rel(o64[nm], ref_c[nm]))
    finally:
        ctl.remove()
    # batch 1 vs batch 4
    x4 = images[:4].astype(np.float32)
    t4 = np.array([-1, 1, 0, -1], np.int64)
    o4 = sess.run(names, {"image": x4, "target_class": t4})
    b_err = 0.0
    for j in range(4):
        o1 = sess.run(names, {"image": x4[j:j + 1], "target_class": t4[j:j + 1]})
        for a, b in zip(o1, o4):
            den = max(np.abs(b[j]).max(), 1e-30)
            b_err = max(b_err, float(np.abs(a[0] - b[j]).max() / den))
    fwd = [nm for nm in names if not nm.startswith("grad_")]
    gate32 = {nm: (plain[nm] if nm in fwd else matched[nm]) for nm in names}
    ok = (max(gate32.values()) <= tol and flips["outside_tol"] == 0 and b_err <= tol
          and (ref64 is None or max(graph64.values()) <= tol))
    shapes = {o.name: o.shape for o in sess.get_outputs()}
    ins = {i.name: (i.type, i.shape) for i in sess.get_inputs()}
    return {"plates": n, "target_classes": [-1, 0, 1], "tolerance": tol, "pass": ok,
            "feature_distance": None if fs is None else (
                {"layer": fs["layer"], "dims": int(fs["mu"].numel())} if "layer" in fs else
                {"layers": fs["layers"], "dims": {n: int(fs["mu"][n].numel())
                                                  for n in fs["layers"]}}),
            "max_rel_error": gate32, "max_rel_error_all": max(gate32.values()),
            "plain_rel_error": plain, "branch_matched_rel_error": matched,
            "float64_graph_rel_error": graph64 if ref64 is not None else None,
            "float64_graph_vs_unfolded_rel_error": graph64_unfolded if ref64 is not None
            else None,
            "relu_nodes": len(relu_names), "relu_flips": flips,
            "argmax_disagreements": argmax_flips, "batch1_vs_batch4_rel": b_err,
            "inputs": ins, "outputs": shapes, "onnxruntime": ort.__version__,
            "onnx": onnx.__version__, "torch": torch.__version__}


def write_report(res: dict, onnx_path, path: Path, extra: str = ""):
    import onnx
    m = onnx.load(str(onnx_path))
    md = {p.key: p.value for p in m.metadata_props}
    opset = max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    fl = res["relu_flips"]
    g64 = res.get("float64_graph_rel_error")
    lines = [
        "# Export verification (models/plateqc.onnx)",
        "",
        "Generated by `models/ship.py` (target `make -C models model`; the method is in the "
        "docstring of `models/verify.py`). The exported graph (forward + backward traced with "
        "make_fx, BatchNorm folded) is compared with the **unfolded PyTorch model run in float64 "
        "with autograd**:",
        "",
        "- **A, plain**: the shipped file in onnxruntime (float32) against float64 autograd.",
        "- **B, branch-matched**: the same float32 run against float64 autograd whose ReLU "
        "units take the branch (z > 0 or not) that the float32 run took. ReLU has a kink at 0; "
        "a pre-activation z within float32 rounding of 0 can land on different sides in float32 "
        "and float64, and then everything upstream of it gets a different (each exact) gradient. "
        "Such *flips* are counted, and accepted only where |z| <= tolerance x max|z| of that "
        "layer and plate (float64 value).",
        "- **C, float64 graph**: a float64 copy of the same graph (the shipped nodes; "
        "initializers, which hold the float32-rounded folded weights, widened to float64; "
        "nothing re-exported) evaluated by `onnx.reference.ReferenceEvaluator` against float64 "
        "autograd of the PyTorch model with the same folded weights: both sides compute the "
        "same function in float64, so this checks the exported backward graph itself. "
        "C' (not gated) is the same float64 graph against the unfolded float64 model.",
        "",
        f"- plates: {res['plates']} (test split), target_class in {res['target_classes']} "
        f"(-1: the arg-max of the float32 run is explained on both sides)",
        f"- relative error = max|got - ref| / max|ref| per plate and output; max over plates",
        f"- tolerance: {res['tolerance']:g}. Gate: forward outputs (A), gradients (B), every "
        f"output of C, flips only at |z| <= tolerance, batch 1 = batch 4. "
        f"**{'PASS' if res['pass'] else 'FAIL'}**",
        f"- ReLU flips between float32 and float64, counted over {res['plates']} plates x 3 "
        f"target runs (a flip on one plate shows once per target): {fl['elements']} "
        f"(per ReLU, forward order: {fl['per_relu']}); largest |z| at a flip = "
        f"{fl['max_rel_preact']:.1e} x max|z|; flips beyond tolerance: {fl['outside_tol']}",
        f"- arg-max disagreements between float32 and float64 (target -1): "
        f"{res['argmax_disagreements']}",
        f"- onnxruntime {res['onnxruntime']}: loads; batch 1 vs batch 4 max relative difference "
        f"{res['batch1_vs_batch4_rel']:.2e}",
        *([f"- `{E.FEATURE_DISTANCE}` (optional output, {res['feature_distance']['dims']} "
           f"pooled features of `{res['feature_distance']['layer']}`): a forward output, gated "
           "on A and C; the references compute it from their own float64 activation with the "
           "same mu and W (the float32 values the file holds, widened to float64)"]
          if res.get("feature_distance") and "layer" in res["feature_distance"] else []),
        *([f"- `{E.FEATURE_DISTANCE}` (optional output, the max over layers "
           + ", ".join(f"`{n}`" for n in res['feature_distance']['layers'])
           + " of each layer's whitened per-channel mean/std distance over its scale; "
           + "dimensions " + ", ".join(f"{n} {d}" for n, d in
                                       res['feature_distance']['dims'].items())
           + "): a forward output, gated on A and C; the references compute it from their own "
           "float64 activations with the same mu, W and scales (the float32 values the file "
           "holds, widened to float64)"]
          if res.get("feature_distance") and "layers" in res["feature_distance"] else []),
        f"- torch {res['torch']}, onnx {res.get('onnx', '?')}; file size "
        f"{Path(onnx_path).stat().st_size} bytes; opset {opset}; external data: none",
        "",
        "| output | shape | A plain (float32) | B branch-matched (float32) | C float64 graph "
        "| C' float64 graph vs unfolded |",
        "|---|---|---|---|---|---|",
    ]
    for k in res["max_rel_error"]:
        c = f"{g64[k]:.2e}" if g64 else "not run"
        cu = (f"{res['float64_graph_vs_unfolded_rel_error'][k]:.2e}" if g64 else "not run")
        lines.append(f"| `{k}` | {res['outputs'].get(k)} | {res['plain_rel_error'][k]:.2e} | "
                     f"{res['branch_matched_rel_error'][k]:.2e} | {c} | {cu} |")
    if fl["where"]:
        lines += ["", "ReLU flips (first few; ReLU index in forward order; index = channel, "
                  "row, column of the ReLU input; z = pre-activation):", "",
                  "| plate | target | ReLU | index | z float64 | z float32 | abs(z64) / max abs(z64) |",
                  "|---|---|---|---|---|---|---|"]
        for w in fl["where"][:12]:
            lines.append(f"| {w['plate']} | {w['target']} | {w['relu']} | {w['index']} | "
                         f"{w['z64']:.3e} | {w['z32']:.3e} | {w['z64_rel']:.1e} |")
    lines += ["", "Inputs: " + ", ".join(f"`{k}` {t} {s}" for k, (t, s) in res["inputs"].items()),
              "", "Metadata:", "", "| key | value |", "|---|---|"]
    for k, v in md.items():
        vv = v if len(v) < 120 else v[:117] + "..."
        lines.append(f"| `{k}` | `{vv}` |")
    if extra:
        lines += ["", extra]
    path.write_text("\n".join(lines) + "\n")
