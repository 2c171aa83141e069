"""Export the trained plateqc model to models/plateqc.onnx, verify it, write models/VERIFY.md.

    python -m plateqc_model.ship --run models/work/run --out models/plateqc.onnx

The file is exported beside its destination and moved into place (with the weights copied to
--weights-out) only when the verification passes; a failed verification leaves the shipped
model alone and writes its report to models/work/VERIFY-failed.md.

From 1.3.1 the export carries the optional `feature_distance` output (plateqc_model/ood.py;
from 1.3.2 the multi-layer score): its statistics come from --ood (models/plateqc_ood.npz,
tracked), which is fitted afresh (and rewritten) only when it is missing, is of another kind
than ood.KIND, was fitted with other weights than the run's, or --ood-refit is given. --no-ood exports without the output (as 1.3.0 was).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parents[1]   # models/

from plateqc_model import data as D
from plateqc_model import export as E
from plateqc_model import ood as O
from plateqc_model import verify as V
from plateqc_model.net import PlateNet, build

MODEL_NAME = "plateqc-psp-cnn"
MODEL_VERSION = "1.7.0"


def load_model(weights: Path, width: int, n_types: int = 14) -> PlateNet:
    return build(torch.load(weights, map_location="cpu", weights_only=True), width, n_types)


def training_generator_hash(train: str, val: str, size: int, psp: str) -> str:
    """The generator-source hash of the training data. `train` and `val` may list several
    splits (one per training family, in the same order: train4,trainc5 with val4,valc5); each
    training split must come from the same generator version as its validation split. One
    family: that family's hash, as before; several: the sha256 of theirs, in order."""
    trains, vals = train.split(","), val.split(",")
    if len(trains) != len(vals):
        raise SystemExit(f"{train} and {val} do not pair up family by family")
    hashes = []
    for t, v in zip(trains, vals):
        ht, hv = (D.split_generator_hash(sp, size, psp) for sp in (t, v))
        if ht != hv:
            raise SystemExit(f"{t} and {v} made by different generator versions: {ht} {hv}")
        hashes.append(ht)
    current = {}
    for fam in ("a", "c", "d", "e", "f"):
        D.FAMILY[0], D._IMPORT_HASH[0] = fam, None
        current[fam] = D.data_hash({})
    D.FAMILY[0] = "a"
    for h in hashes:
        if h not in current.values():
            print(f"WARNING: the generator that made {h[:12]} changed since", flush=True)
    if len(hashes) == 1:
        return hashes[0]
    return __import__("hashlib").sha256("|".join(hashes).encode()).hexdigest()


def feature_stats(run: Path, path: Path, refit: bool = False) -> dict:
    """The run's feature-distance statistics: `path` when it was fitted with the run's weights,
    otherwise fitted now on the run's training and validation caches and written to `path`."""
    want = O.sha256_file(run / "weights.pt")
    if path.exists() and not refit:
        s = O.load(path)
        if s["weights_sha256"] == want and s["kind"] == O.KIND:
            print(f"feature distance: {path} (threshold {s['threshold']!r}, "
                  f"{O.summary(s)})", flush=True)
            return s
        why = (f"is of kind {s['kind']!r}, not {O.KIND!r}" if s["kind"] != O.KIND
               else "was fitted with other weights")
        print(f"feature distance: {path} {why}; fitting again", flush=True)
    return O.fit_for_run(run, path)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=str(HERE / "work" / "run"))
    ap.add_argument("--out", default=str(HERE / "plateqc.onnx"))
    ap.add_argument("--weights-out", default=str(HERE / "plateqc_weights.pt"))
    ap.add_argument("--verify-split", default="test")
    ap.add_argument("--verify-count", type=int, default=24)
    ap.add_argument("--data-settings", default="{}", help="JSON of the data settings (hashed)")
    ap.add_argument("--report", default=str(HERE / "VERIFY.md"))
    ap.add_argument("--ood", default=str(HERE / "plateqc_ood.npz"),
                    help="feature-distance statistics (plateqc_model/ood.py)")
    ap.add_argument("--ood-refit", action="store_true", help="fit --ood again even if it fits")
    ap.add_argument("--no-ood", action="store_true", help="no feature_distance output")
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    run = Path(a.run)
    res = json.loads((run / "train_result.json").read_text())
    model = load_model(run / "weights.pt", res["width"])
    layers = list(PlateNet.LAYERS)
    settings = json.loads(a.data_settings)
    psp = res.get("psp", D.pp.PSP_V1)
    gen_hash = training_generator_hash(res["args"]["train"], res["args"]["val"], res["size"], psp)
    settings["generator_sources_sha256"] = gen_hash
    fs = None if a.no_ood else feature_stats(run, Path(a.ood), a.ood_refit)
    md = E.build_metadata(
        input_size=res["size"], layers=layers, artifact_types=D.artifact_types(),
        threshold=res["threshold"], artifact_threshold=0.5, model_name=MODEL_NAME,
        model_version=MODEL_VERSION, training_seed=res["seed"],
        data_hash=D.dataset_hash(gen_hash, settings), preprocessing=psp,
        feature_distance_threshold=fs["threshold"] if fs else None,
        feature_distance_description=fs["description"] if fs else None)
    tmp = Path(a.out).with_name(Path(a.out).name + ".tmp")
    info = E.export_onnx(model, layers, tmp, input_size=res["size"], metadata=md,
                         feature_stats=O.graph_stats(fs) if fs else None)
    problems = E.check_contract(tmp)
    print(json.dumps({**info, "contract_problems": problems}), flush=True)
    if problems:
        tmp.unlink()
        raise SystemExit(f"contract problems: {problems}")
    imgs = D.load_split(a.verify_split, res["size"], a.verify_count, psp=psp)["x"].astype(np.float64)
    vr = V.verify(tmp, model, layers, imgs, feature_stats=O.graph_stats(fs) if fs else None)
    print(json.dumps({k: v for k, v in vr.items() if k not in ("inputs", "outputs")}, indent=1))
    if not vr["pass"]:
        failed = HERE / "work" / "VERIFY-failed.md"
        failed.parent.mkdir(parents=True, exist_ok=True)
        V.write_report(vr, tmp, failed)
        tmp.unlink()
        raise SystemExit(f"verification FAILED (see {failed}); {a.out} left unchanged")
    tmp.replace(a.out)
    V.write_report(vr, a.out, Path(a.report))
    shutil.copyfile(run / "weights.pt", a.weights_out)
    (Path(a.weights_out).with_suffix(".json")).write_text(json.dumps(
        {"width": res["width"], "size": res["size"], "layers": layers,
         "threshold": res["threshold"], "seed": res["seed"], "preprocessing": psp,
         **({"feature_distance": {"stats": Path(a.ood).name, "kind": fs["kind"],
                                  **({"layer": fs["layer"]} if fs["kind"] == O.KIND_POOLED
                                     else {"layers": fs["layers"]}),
                                  "threshold": fs["threshold"]}} if fs else {})},
        indent=1) + "\n")


if __name__ == "__main__":
    main()
