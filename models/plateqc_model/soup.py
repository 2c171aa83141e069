"""A uniform weight soup: the average of several runs' weights (plan-1.3.md round 14).

    python -m plateqc_model.soup --runs runs/cand-R runs/cand-T runs/cand-U --out runs/cand-W

Every floating-point tensor of the runs' `weights.pt` (parameters and BatchNorm running
statistics) is averaged with equal weights; integer tensors (BatchNorm's batch counter) are
taken from the last run. The runs must share the architecture (same keys, shapes and width)
and should start from one point: averaging runs from different random starts mixes unrelated
features. The result is a run directory like a training run's: `weights.pt` and a
`train_result.json` whose recipe is the last run's (its training and validation splits, so
`ship` and the feature-distance fit read the same caches) with `soup` naming the members, and
whose threshold is chosen as training chooses it (validation sensitivity `--target-sens`, the
last run's by default, on the last run's validation splits).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from plateqc_model import data as D
from plateqc_model.net import build
from plateqc_model.train import threshold_fields


def average(states: list[dict]) -> dict:
    """The uniform average of state dicts with identical keys and shapes."""
    if not states:
        raise ValueError("no weights to average")
    keys = list(states[-1].keys())
    for i, s in enumerate(states):
        if list(s.keys()) != keys:
            raise ValueError(f"member {i} has other tensors than the last member")
        for k in keys:
            if s[k].shape != states[-1][k].shape:
                raise ValueError(f"member {i}: {k} is {tuple(s[k].shape)}, "
                                 f"not {tuple(states[-1][k].shape)}")
    out = {}
    for k in keys:
        last = states[-1][k]
        if last.is_floating_point():
            # summed in float64 so the order of the members does not change the result's bits
            acc = torch.zeros(last.shape, dtype=torch.float64)
            for s in states:
                acc += s[k].to(torch.float64)
            out[k] = (acc / len(states)).to(last.dtype)
        else:
            out[k] = last.clone()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", nargs="+", required=True, help="run directories, last = recipe")
    ap.add_argument("--out", required=True)
    ap.add_argument("--target-sens", type=float, default=None)
    a = ap.parse_args(argv)
    if len(a.runs) < 2:
        ap.error("a soup needs at least two runs")
    runs = [Path(r) for r in a.runs]
    results = [json.loads((r / "train_result.json").read_text()) for r in runs]
    res = results[-1]
    for r, rr in zip(runs, results):
        if (rr["width"], rr["size"], rr.get("psp")) != (res["width"], res["size"], res.get("psp")):
            raise SystemExit(f"{r}: width/size/preprocessing differ from {runs[-1]}")
    states = [torch.load(r / "weights.pt", map_location="cpu", weights_only=True) for r in runs]
    soup = average(states)
    model = build(soup, res["width"], len(D.TYPE_NAMES))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(soup, out / "weights.pt")
    target = a.target_sens if a.target_sens is not None else res["target_sens"]
    va = D.load_split(res["args"]["val"], res["size"], psp=res.get("psp", D.pp.PSP_V1))
    new = {k: v for k, v in res.items() if k not in ("history", "train_seconds")}
    new["args"] = {**res["args"], "out": str(out)}
    new["soup"] = {"members": [str(r) for r in runs], "weights": "uniform"}
    new["val_plates"] = int(len(va["y"]))
    new.update(threshold_fields(model, va, target))
    (out / "train_result.json").write_text(json.dumps(new, indent=1))
    print(json.dumps({k: v for k, v in new.items() if k != "args"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
