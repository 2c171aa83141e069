"""Export any PyTorch CNN to a plateqc contract ONNX file (see models/README.md).

The model must be an nn.Module whose forward(x) returns (class_logits [N,2], type_logits [N,K]).
Layers are named by their module path (``model.get_submodule(name)``); the module's output is the
activation ``act_<name>`` and ``grad_<name>`` is d logits[n, c_n] / d act (pre-softmax).

How the backward pass gets into ONNX: the function image, target_class -> (logits, ...,
grads) that calls torch.autograd.grad is traced with torch.fx.experimental.proxy_tensor.make_fx
(symbolic shapes), which records the forward *and* the backward as plain aten ops; that graph is
then exported with the torch.onnx (dynamo) exporter.  BatchNorm layers that directly follow a
Conv2d are folded into the convolution first (eval statistics), so the file holds no batch
statistics and samples stay independent.

CLI (bring your own model):
    python -m plateqc_model.export --module mypkg.mynet:build_model --weights w.pt \
        --layers block2,block3,block4 --input-size 256 --out my.onnx \
        --threshold 0.4 --artifact-types models/artifact_types.json
"""
from __future__ import annotations

import argparse
import copy
import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parents[1]   # models/
CONTRACT_VERSION = "1"
PREPROCESSING_ID = "plateqc-psp-v1"
CLASSES = ["usable", "unusable"]


# ---------------------------------------------------------------------------
# BatchNorm folding
# ---------------------------------------------------------------------------
def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, new)


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """Return an eval-mode deep copy with every Conv2d -> BatchNorm2d pair folded.

    Pairs are found with torch.fx: a BatchNorm2d module whose only input is a Conv2d module's
    output, which has no other user.  Module names are kept (the BN becomes nn.Identity), so
    layer names stay valid.  If the model cannot be fx-traced nothing is folded (the eval-mode
    BatchNorm is then exported as is, which is still batch-independent)."""
    model = copy.deepcopy(model).eval()
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:  # pragma: no cover - depends on the user's model
        print(f"export: BN folding skipped (fx trace failed: {exc})", file=sys.stderr)
        return model, 0
    mods = dict(model.named_modules())
    folded = 0
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0]
        if not (isinstance(src, torch.fx.Node) and src.op == "call_module"
                and isinstance(mods.get(src.target), nn.Conv2d) and len(src.users) == 1):
            continue
        conv: nn.Conv2d = mods[src.target]
        bn: nn.BatchNorm2d = mods[node.target]
        if not bn.track_running_stats or bn.running_mean is None:
            continue
        with torch.no_grad():
            w = conv.weight.detach().double()
            b = (conv.bias.detach().double() if conv.bias is not None
                 else torch.zeros(w.shape[0], dtype=torch.float64))
            gamma = (bn.weight.detach().double() if bn.weight is not None
                     else torch.ones_like(b))
            beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(b)
            inv = gamma / torch.sqrt(bn.running_var.double() + bn.eps)
            new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                            stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                            groups=conv.groups, bias=True, padding_mode=conv.padding_mode)
            new.weight.copy_((w * inv.view(-1, 1, 1, 1)).to(conv.weight.dtype))
            new.bias.copy_((beta + (b - bn.running_mean.double()) * inv).to(conv.weight.dtype))
        _set_submodule(model, src.target, new)
        _set_submodule(model, node.target, nn.Identity())
        folded += 1
    return model.eval(), folded


# ---------------------------------------------------------------------------
# decompositions for the traced backward
# ---------------------------------------------------------------------------
def _conv_backward(grad_output, inp, weight, bias_sizes, stride, padding, dilation, transposed,
                   output_padding, groups, output_mask):
    """aten.convolution_backward as a transposed convolution (input gradient only).

    The ONNX exporter has no translation of convolution_backward; the gradient w.r.t. the input
    of a convolution is the transposed convolution of grad_output with the same weight.  Weights
    are constants of the exported graph, so their gradients are never requested."""
    aten = torch.ops.aten
    if transposed:
        raise NotImplementedError("export: backward of transposed convolutions is not supported")
    if output_mask[1]:
        raise NotImplementedError("export: weight gradients are not exported")
    grad_input = None
    if output_mask[0]:
        nd = len(stride)
        k = weight.shape[2:]
        out_pad = []
        for i in range(nd):
            # specialises the spatial sizes (S is a contract constant); batch stays symbolic
            in_sz = int(inp.shape[2 + i])
            out_sz = int(grad_output.shape[2 + i])
            full = (out_sz - 1) * stride[i] - 2 * padding[i] + dilation[i] * (int(k[i]) - 1) + 1
            out_pad.append(in_sz - full)
        grad_input = aten.convolution.default(grad_output, weight, None, list(stride),
                                              list(padding), list(dilation), True, out_pad,
                                              groups)
    grad_bias = aten.sum.dim_IntList(grad_output, [0] + list(range(2, grad_output.dim()))) \
        if output_mask[2] else None
    return grad_input, None, grad_bias


def decomposition_table():
    from torch._decomp import core_aten_decompositions
    table = dict(core_aten_decompositions())
    table[torch.ops.aten.convolution_backward.default] = _conv_backward
    return table


# ---------------------------------------------------------------------------
# the explained function
# ---------------------------------------------------------------------------
FEATURE_DISTANCE = "feature_distance"


MULTI_LAYER = "layer-meanstd-max"     # plateqc_model.ood.KIND (1.3.2)


def cast_feature_stats(fs: dict | None, dtype=torch.float32) -> dict | None:
    """``feature_stats`` (either form, see ``Explained``) with its arrays as tensors of dtype."""
    if fs is None:
        return None
    t = lambda v: torch.as_tensor(np.asarray(v, np.float32).astype(np.float64)
                                  if not isinstance(v, torch.Tensor) else v).to(dtype)
    if fs.get("kind") == MULTI_LAYER:
        return {"kind": MULTI_LAYER, "layers": list(fs["layers"]),
                "mu": {n: t(fs["mu"][n]) for n in fs["layers"]},
                "W": {n: t(fs["W"][n]) for n in fs["layers"]},
                "scale": {n: float(fs["scale"][n]) for n in fs["layers"]}}
    return {"layer": fs["layer"], "mu": t(fs["mu"]), "W": t(fs["W"])}


class Explained(nn.Module):
    """image, target_class -> logits, probabilities, artifact_scores, act_*, grad_*
    [, feature_distance]

    ``feature_stats`` (optional) adds the contract's optional ``feature_distance`` output [N],
    computed from activations alone (no gradient involved), in one of two forms
    (plateqc_model/ood.py fits both):

    - 1.3.2, ``{"kind": "layer-meanstd-max", "layers": [...], "mu": {l: [D_l]},
      "W": {l: [D_l, D_l]}, "scale": {l: s_l}}``: for each layer ``l`` (its conv-BN-ReLU
      output ``a`` [N, C, h, w]) ``f_l = cat(mean_hw(a), sqrt(mean_hw((a - mean_hw(a))^2)))``,
      ``d_l = sqrt(mean_k (W_l (f_l - mu_l))_k^2) / s_l``; ``feature_distance = max_l d_l``
      (spatial means taken over w, then over h);
    - 1.3.1, ``{"layer", "mu" [D], "W" [D, D]}``: ``f`` = the pooled features of that layer
      (global max and global mean, what PlateNet's heads read),
      ``d = sqrt(mean_k (W (f - mu))_k^2)``."""

    def __init__(self, model: nn.Module, layers: list[str], feature_stats: dict | None = None):
        super().__init__()
        self.model = model
        self.layers = list(layers)
        for name in self.layers:
            model.get_submodule(name)  # raises if missing
        self.feature_layers: list[str] = []
        self.multi = False
        if feature_stats is not None and feature_stats.get("kind") == MULTI_LAYER:
            self.multi = True
            self.feature_layers = [str(n) for n in feature_stats["layers"]]
            for i, n in enumerate(self.feature_layers):
                model.get_submodule(n)
                mu = torch.as_tensor(feature_stats["mu"][n]).reshape(-1)
                w = torch.as_tensor(feature_stats["W"][n])
                if w.shape != (mu.numel(), mu.numel()):
                    raise ValueError(f"feature_stats[{n}]: W {tuple(w.shape)} does not match "
                                     f"mu {tuple(mu.shape)}")
                sc = float(feature_stats["scale"][n])
                if not (np.isfinite(sc) and sc > 0):
                    raise ValueError(f"feature_stats[{n}]: scale {sc} is not finite and > 0")
                self.register_buffer(f"fd_mu_{i}", mu.clone())
                self.register_buffer(f"fd_wt_{i}", w.t().contiguous().clone())
                self.register_buffer(f"fd_scale_{i}", torch.tensor(sc, dtype=mu.dtype))
        elif feature_stats is not None:
            self.feature_layers = [str(feature_stats["layer"])]
            model.get_submodule(self.feature_layers[0])
            mu = torch.as_tensor(feature_stats["mu"]).reshape(-1)
            w = torch.as_tensor(feature_stats["W"])
            if w.shape != (mu.numel(), mu.numel()):
                raise ValueError(f"feature_stats: W {tuple(w.shape)} does not match mu "
                                 f"{tuple(mu.shape)}")
            # buffers, so that .double() / .float() of the module carries them along
            self.register_buffer("fd_mu", mu.clone())
            self.register_buffer("fd_wt", w.t().contiguous().clone())

    @property
    def feature_layer(self):
        """1.3.1 form: the one layer; None without feature_stats."""
        return self.feature_layers[0] if self.feature_layers else None

    @staticmethod
    def _rms(f, mu, wt):
        if mu.dtype != f.dtype:     # a Python branch: nothing is traced when they agree
            mu, wt = mu.to(f.dtype), wt.to(f.dtype)
        z = torch.matmul(f - mu, wt)
        return torch.sqrt(torch.mean(z * z, dim=1))

    def feature_distance(self, a) -> torch.Tensor:
        """``a``: the feature layer's activation (1.3.1 form) or {layer: activation}."""
        if not self.multi:
            if isinstance(a, dict):
                a = a[self.feature_layers[0]]
            f = torch.cat([a.amax(dim=(2, 3)), a.mean(dim=(2, 3))], dim=1)
            return self._rms(f, self.fd_mu, self.fd_wt)
        # spatial means in two steps (over w, then over h): onnxruntime's float32 ReduceMean
        # over all 128 x 128 positions of `stem` at once loses about 5e-5 (relative) of the
        # score, beyond the export check's 1e-5; two steps of 128 stay within 3e-6, for a
        # third of the cost of computing in float64
        ds = []
        for i, n in enumerate(self.feature_layers):
            x = a[n]
            m = x.mean(dim=3).mean(dim=2)
            v = ((x - m[:, :, None, None]) ** 2).mean(dim=3).mean(dim=2)
            f = torch.cat([m, torch.sqrt(v)], dim=1)
            sc = getattr(self, f"fd_scale_{i}")
            d = self._rms(f, getattr(self, f"fd_mu_{i}"), getattr(self, f"fd_wt_{i}"))
            ds.append(d / sc.to(d.dtype))
        return torch.stack(ds, dim=1).amax(dim=1)

    def forward(self, image: torch.Tensor, target_class: torch.Tensor):
        acts: dict[str, torch.Tensor] = {}
        handles = []
        hooked = self.layers + [n for n in self.feature_layers if n not in self.layers]
        for name in hooked:
            def hook(_m, _inp, out, _name=name):
                acts[_name] = out
            handles.append(self.model.get_submodule(name).register_forward_hook(hook))
        try:
            with torch.enable_grad():
                logits, type_logits = self.model(image)
                chosen = torch.where(target_class < 0, torch.argmax(logits, dim=1), target_class)
                score = torch.gather(logits, 1, chosen.unsqueeze(1)).sum()
                grads = torch.autograd.grad(score, [acts[n] for n in self.layers])
        finally:
            for h in handles:
                h.remove()
        probs = torch.softmax(logits, dim=1)
        scores = torch.sigmoid(type_logits)
        outs = [logits.detach(), probs.detach(), scores.detach()]
        outs += [acts[n].detach() for n in self.layers]
        outs += [g.detach() for g in grads]
        if self.feature_layers:
            outs.append(self.feature_distance({n: acts[n].detach()
                                               for n in self.feature_layers}))
        return tuple(outs)


def output_names(layers: list[str], feature_distance: bool = False) -> list[str]:
    return (["logits", "probabilities", "artifact_scores"] + [f"act_{n}" for n in layers]
            + [f"grad_{n}" for n in layers] + ([FEATURE_DISTANCE] if feature_distance else []))


def explain_torch(model: nn.Module, layers: list[str], image: torch.Tensor,
                  target_class: torch.Tensor, feature_stats: dict | None = None
                  ) -> dict[str, torch.Tensor]:
    """Reference outputs straight from PyTorch autograd (any dtype the model is in)."""
    ex = Explained(model, layers, feature_stats)
    return dict(zip(output_names(layers, feature_stats is not None), ex(image, target_class)))


# ---------------------------------------------------------------------------
# metadata helpers
# ---------------------------------------------------------------------------
def git_commit(repo: Path = HERE.parent) -> str:
    try:
        return subprocess.check_output(["git", "-C", str(repo), "rev-parse", "HEAD"],
                                       text=True, stderr=subprocess.DEVNULL).strip()
    except Exception:
        return "unknown"


def build_metadata(*, input_size: int, layers: list[str], artifact_types: list[dict],
                   threshold: float, artifact_threshold: float = 0.5,
                   model_name: str = "plateqc-psp-cnn", model_version: str = "1.0.0",
                   training_seed: int | str = "unknown", data_hash: str = "unknown",
                   commit: str | None = None, extra: dict | None = None,
                   preprocessing: str = PREPROCESSING_ID,
                   feature_distance_threshold: float | None = None,
                   feature_distance_description: str | None = None) -> dict[str, str]:
    """The contract's metadata. ``feature_distance_threshold`` (with the optional
    ``feature_distance`` output): a plate whose distance is at or above it goes to human review;
    ``feature_distance_description`` says in one sentence what the score is."""
    for t in artifact_types:
        if not {"name", "code", "meaning"} <= set(t):
            raise ValueError(f"artifact type needs name, code, meaning: {t}")
    md = {
        "plateqc.contract": CONTRACT_VERSION,
        "plateqc.preprocessing": preprocessing,
        "plateqc.input_size": str(int(input_size)),
        "plateqc.classes": json.dumps(CLASSES),
        "plateqc.artifact_types": json.dumps(
            [{"name": t["name"], "code": str(t["code"]), "meaning": t["meaning"]}
             for t in artifact_types]),
        "plateqc.layers": json.dumps(list(layers)),
        "plateqc.threshold": repr(float(threshold)),
        "plateqc.artifact_threshold": repr(float(artifact_threshold)),
        "plateqc.model_name": model_name,
        "plateqc.model_version": model_version,
        "plateqc.training_seed": str(training_seed),
        "plateqc.data_hash": data_hash,
        "plateqc.git_commit": commit if commit is not None else git_commit(),
    }
    if feature_distance_threshold is not None:
        t = float(feature_distance_threshold)
        if not (math.isfinite(t) and t > 0):
            raise ValueError(f"feature_distance_threshold must be finite and > 0, not {t}")
        md["plateqc.feature_distance_threshold"] = repr(t)
        md["plateqc.feature_distance"] = (feature_distance_description
                                          or "an out-of-distribution score of the plate")
    if extra:
        md.update({k: str(v) for k, v in extra.items()})
    return md


# ---------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------
def export_onnx(model: nn.Module, layers: list[str], out_path: str | Path, *, input_size: int,
                metadata: dict[str, str], opset: int = 18, max_bytes: int = 10 * 1024 * 1024,
                feature_stats: dict | None = None):
    """Fold BN, trace forward+backward, export to ``out_path`` and attach metadata.

    ``feature_stats`` (either form of ``Explained``) adds the optional
    ``feature_distance`` output; the metadata should then carry
    ``plateqc.feature_distance_threshold`` (``build_metadata(feature_distance_threshold=...)``)."""
    import onnx
    from torch.fx.experimental.proxy_tensor import make_fx

    folded, nfold = fold_batchnorm(model)
    folded = folded.float().eval()
    for p in folded.parameters():
        p.requires_grad_(True)
    feature_stats = cast_feature_stats(feature_stats, torch.float32)
    ex = Explained(folded, layers, feature_stats).eval()
    S = int(input_size)
    # batch 3 so that the symbolic batch is not unified with the 2 channels
    img = torch.rand(3, 2, S, S)
    tgt = torch.tensor([-1, 1, 0], dtype=torch.int64)
    gm = make_fx(ex, decomposition_table=decomposition_table(), tracing_mode="symbolic",
                 _allow_non_fake_inputs=True)(img, tgt)
    # make_fx keeps weights as plain attributes (Parameters); register them as buffers so the
    # exporter lifts them into initializers
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            t = getattr(gm, node.target)
            if isinstance(t, torch.Tensor):
                delattr(gm, node.target)
                gm.register_buffer(node.target, t.detach().clone())
    gm.recompile()
    names = output_names(layers, feature_stats is not None)
    batch = torch.export.Dim("batch", min=1, max=1024)
    prog = torch.onnx.export(
        gm, (img, tgt), None, dynamo=True, external_data=False, opset_version=opset,
        input_names=["image", "target_class"], output_names=names,
        dynamic_shapes=({0: batch}, {0: batch}), optimize=True, verify=False,
        report=False)
    mp = prog.model_proto
    # fixed non-batch dims for the image input (S is a contract constant)
    img_in = [i for i in mp.graph.input if i.name == "image"][0]
    dims = img_in.type.tensor_type.shape.dim
    dims[0].dim_param = "N"
    for d in mp.graph.input[1].type.tensor_type.shape.dim:
        d.dim_param = "N"
    for o in mp.graph.output:
        od = o.type.tensor_type.shape.dim
        if len(od):
            od[0].dim_param = "N"
    del mp.metadata_props[:]
    for k, v in metadata.items():
        e = mp.metadata_props.add()
        e.key = k
        e.value = v
    mp.producer_name = "plateqc-export"
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(mp, str(out_path), save_as_external_data=False)
    onnx.checker.check_model(str(out_path))
    size = out_path.stat().st_size
    if size > max_bytes:
        raise RuntimeError(f"{out_path} is {size} bytes > {max_bytes}")
    return {"bytes": size, "bn_folded": nfold, "opset": opset, "outputs": names}


def check_contract(path: str | Path) -> list[str]:
    """Static checks of an exported file against the contract; returns a list of problems."""
    import onnx
    problems = []
    m = onnx.load(str(path))
    md = {p.key: p.value for p in m.metadata_props}
    need = ["plateqc.contract", "plateqc.preprocessing", "plateqc.input_size", "plateqc.classes",
            "plateqc.artifact_types", "plateqc.layers", "plateqc.threshold",
            "plateqc.artifact_threshold", "plateqc.model_name", "plateqc.model_version",
            "plateqc.training_seed", "plateqc.data_hash", "plateqc.git_commit"]
    for k in need:
        if k not in md:
            problems.append(f"missing metadata {k}")
    if problems:
        return problems
    layers = json.loads(md["plateqc.layers"])
    S = int(md["plateqc.input_size"])
    ins = {i.name: i for i in m.graph.input}
    outs = {o.name: o for o in m.graph.output}
    if "image" not in ins:
        problems.append("no input 'image'")
    else:
        d = [x.dim_value if x.HasField("dim_value") else x.dim_param
             for x in ins["image"].type.tensor_type.shape.dim]
        if d[1:] != [2, S, S] or isinstance(d[0], int) and d[0] != 0 and d[0] != -1:
            problems.append(f"image shape {d} is not [N,2,{S},{S}]")
    for n in output_names(layers):
        if n not in outs:
            problems.append(f"missing output {n}")
    if FEATURE_DISTANCE in outs:    # optional; when present, [N] float32 with its threshold
        tt = outs[FEATURE_DISTANCE].type.tensor_type
        d = [x.dim_value if x.HasField("dim_value") else x.dim_param for x in tt.shape.dim]
        if len(d) != 1:
            problems.append(f"output {FEATURE_DISTANCE} has shape {d}, not [N]")
        if tt.elem_type != onnx.TensorProto.FLOAT:
            problems.append(f"output {FEATURE_DISTANCE} is not float32")
        t = md.get("plateqc.feature_distance_threshold")
        if t is None:
            problems.append(f"output {FEATURE_DISTANCE} without metadata "
                            "plateqc.feature_distance_threshold")
        else:
            try:
                tv = float(t)
            except ValueError:
                tv = float("nan")
            if not (math.isfinite(tv) and tv > 0):
                problems.append(f"plateqc.feature_distance_threshold {t!r} is not a finite "
                                "number > 0")
    opset = max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 17:
        problems.append(f"opset {opset} < 17")
    if "unusable" not in json.loads(md["plateqc.classes"]):
        problems.append("classes lack 'unusable'")
    return problems


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------
def _load_factory(spec: str):
    mod_name, _, attr = spec.partition(":")
    sys.path.insert(0, os.getcwd())
    mod = importlib.import_module(mod_name)
    return getattr(mod, attr or "build_model")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--module", required=True,
                    help="python path 'pkg.mod:factory'; factory() returns the nn.Module")
    ap.add_argument("--weights", help="state_dict file (torch.save) to load into the model")
    ap.add_argument("--layers", required=True, help="comma-separated module names, shallow to deep")
    ap.add_argument("--input-size", type=int, default=256)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threshold", type=float, required=True)
    ap.add_argument("--artifact-threshold", type=float, default=0.5)
    ap.add_argument("--artifact-types", required=True,
                    help="JSON file: list of {name, code, meaning} in type-logit order")
    ap.add_argument("--model-name", default="plateqc-custom")
    ap.add_argument("--model-version", default="0.0.1")
    ap.add_argument("--training-seed", default="unknown")
    ap.add_argument("--data-hash", default="unknown")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    model = _load_factory(args.module)()
    if args.weights:
        state = torch.load(args.weights, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        model.load_state_dict(state)
    layers = [s for s in args.layers.split(",") if s]
    types = json.loads(Path(args.artifact_types).read_text())
    md = build_metadata(input_size=args.input_size, layers=layers, artifact_types=types,
                        threshold=args.threshold, artifact_threshold=args.artifact_threshold,
                        model_name=args.model_name, model_version=args.model_version,
                        training_seed=args.training_seed, data_hash=args.data_hash)
    info = export_onnx(model, layers, args.out, input_size=args.input_size, metadata=md)
    probs = check_contract(args.out)
    print(json.dumps({"out": args.out, **info, "contract_problems": probs}, indent=1))
    return 1 if probs else 0


if __name__ == "__main__":
    sys.exit(main())
