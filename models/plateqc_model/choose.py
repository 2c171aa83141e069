"""Choose among finished candidate runs by the rule written before training (plan-1.3.md).

    python -m plateqc_model.choose --runs work/cand-G work/cand-H --out work/choice.json

For each run: export to ONNX beside the run (no verification: only the chosen one is shipped
and verified by ship.py), then on family A only
  * validation (seed 2): ROC AUC and the `last` Grad-CAM pointing game,
  * family-A shifted set (seed 4): specificity at recall 0.95.
Eligible: validation AUC >= 0.98 and pointing >= 0.80. Among eligible runs the higher shifted
specificity at recall 0.95 wins; within 0.01 of each other, the higher validation AUC.
The family-B gate plays no part here (gate.py runs after the choice is written).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]   # models/

from plateqc_model import ambiguous as AM
from plateqc_model import data as D
from plateqc_model import evaluate as EV
from plateqc_model import export as E
from plateqc_model.net import PlateNet
from plateqc_model.ship import load_model

from plateqc_model.rules import MIN_AUC, MIN_POINTING, choose, fallback


def export_candidate(run: Path) -> Path:
    res = json.loads((run / "train_result.json").read_text())
    model = load_model(run / "weights.pt", res["width"])
    md = E.build_metadata(input_size=res["size"], layers=list(PlateNet.LAYERS),
                          artifact_types=D.artifact_types(), threshold=res["threshold"],
                          model_version=f"candidate-{run.name}", training_seed=res["seed"],
                          preprocessing=res.get("psp", D.pp.PSP_V1))
    out = run / "candidate.onnx"
    E.export_onnx(model, list(PlateNet.LAYERS), out, input_size=res["size"], metadata=md)
    return out


class Splits:
    """Validation and shifted sets, loaded once per preprocessing and input size: each model
    reads the same plates as made for its own input (round 20 compares 384 px with 256 px)."""

    def __init__(self, val: str, shifted: str, taus: dict | None = None):
        self.names, self.taus, self.cache = (val, shifted), taus, {}

    def load(self, split: str, psp: str, size: int) -> dict:
        """A split as scored: twin rows (caches made with twins) never count, and with the
        round-16 thresholds the ambiguous plates are left out (ambiguous.py)."""
        return AM.load_scored(split, size, psp, self.taus)

    def get(self, psp: str, size: int):
        if (psp, size) not in self.cache:
            self.cache[(psp, size)] = tuple(self.load(n, psp, size) for n in self.names)
        return self.cache[(psp, size)]


def measure(run: Path, splits: Splits) -> dict:
    return measure_onnx(export_candidate(run), str(run), splits)


def measure_onnx(onnx: Path, name: str, splits: Splits) -> dict:
    m = EV.Model(onnx)
    val, shifted = splits.get(m.psp, m.size)
    v = EV.evaluate_split(m, val)
    s = EV.evaluate_split(m, shifted, cam_limit=0)
    parts = {}
    if "," in splits.names[0]:   # validation over several training families: each one's AUC
        for part in splits.names[0].split(","):
            d = splits.load(part, m.psp, m.size)
            parts[part] = EV.evaluate_split(m, d, cam_limit=0)["classification"]["auc"]
    return {"run": name, **({"val_auc_parts": parts} if parts else {}), "val_auc": v["classification"]["auc"],
            "val_pointing_last": v["explanations"]["per_layer"][m.layers[-1]]["gradcam_hit"],
            "shifted_spec_at_recall_0.95": s["classification"]["spec_at_recall_0.95"],
            "shifted_auc": s["classification"]["auc"], "threshold": m.threshold,
            "preprocessing": m.psp}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="+", required=True)
    ap.add_argument("--val", default="val")
    ap.add_argument("--shifted", default="shifted")
    ap.add_argument("--baseline", default=None,
                    help="the shipped model (ONNX), measured alike for the fallback rule")
    ap.add_argument("--baseline-from", default=None, metavar="CHOICE_JSON",
                    help="instead of --baseline: the baseline row recorded by an earlier choose "
                         "on the same plates (for a baseline whose input cache is gone)")
    ap.add_argument("--out", default=str(HERE / "work" / "choice.json"))
    ap.add_argument("--fallback-val", default=None, metavar="SPLIT",
                    help="with --val naming several splits: the one whose AUC the fallback "
                         "compares with the baseline's (the plates the baseline was measured on)")
    ap.add_argument("--fallback-tolerance", default=None, metavar="AUC,SPEC",
                    help="the fallback accepts a run no worse than the baseline by more than these "
                         "margins on family A (round 7) instead of one that beats it")
    ap.add_argument("--ambiguous", default=None, metavar="JSON",
                    help="leave the ambiguous plates out of every set, by the thresholds a "
                         "round-16 training run recorded (its ambiguous.json); the sets must "
                         "be cached with twins")
    a = ap.parse_args(argv)
    tol = tuple(float(v) for v in a.fallback_tolerance.split(",")) if a.fallback_tolerance else None
    taus = json.loads(Path(a.ambiguous).read_text())["taus"] if a.ambiguous else None
    splits = Splits(a.val, a.shifted, taus)
    rows = []
    for r in a.runs:
        rows.append(measure(Path(r), splits))
        if a.fallback_val:
            rows[-1]["fallback_val_auc"] = rows[-1]["val_auc_parts"][a.fallback_val]
        print(json.dumps(rows[-1]), flush=True)
    base = None
    if a.baseline:
        base = measure_onnx(Path(a.baseline), a.baseline, splits)
        if a.fallback_val:   # measured on the same plates as the runs: compare like with like
            base["fallback_val_auc"] = base["val_auc_parts"][a.fallback_val]
        print(json.dumps({"baseline": base}), flush=True)
    elif a.baseline_from:
        base = json.loads(Path(a.baseline_from).read_text())["baseline"]
        base["recorded_in"] = a.baseline_from
        print(json.dumps({"baseline": base}), flush=True)
    pick, how = choose(rows), "rule"
    if pick is None:
        pick, how = fallback(rows, base, tol), "fallback"
    res = {"rule": {"min_val_auc": MIN_AUC, "min_val_pointing_last": MIN_POINTING,
                    "rank": "shifted spec at recall 0.95, ties within 0.01 by val AUC",
                    "fallback": ("no run eligible: highest val AUC if it beats the baseline on "
                                 "val AUC and shifted spec, then the family-B gate against it"
                                 if tol is None else
                                 f"no run eligible: highest val AUC if no worse than the baseline "
                                 f"by more than {tol[0]} val AUC and {tol[1]} shifted spec, then "
                                 f"the family-B gate against it")},
           **({"ambiguous_left_out_by": a.ambiguous} if a.ambiguous else {}),
           "candidates": rows, "baseline": base,
           "chosen": pick["run"] if pick else None,
           "chosen_by": how if pick else None}
    Path(a.out).write_text(json.dumps(res, indent=1))
    print("chosen:", res["chosen"])


if __name__ == "__main__":
    main()
