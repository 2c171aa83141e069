"""Which unusable plates a model ranks among the clean ones, on the training families' own
validation caches: the figures behind a plan's next round.

    python -m plateqc_model.hard_positives --model plateqc.onnx \
        --val val4,valc5,vald7,vale10 [--out results/hard-positives-1.5.0.json]

For each validation split, and for each artifact type, the unusable plates whose *only*
decisive artifact is that type at severity 2 (no severity 3, no second type at 2 or more) are
ranked against the clean plates (no artifact at all): the AUC of that pair, their median
score and the share below the model's threshold. Also the AUC of clean and of cosmetic usable
plates (severity 1, or severity 2 off the diagnostic region) against every unusable plate, the
specificity of both at the threshold that keeps recall 0.95, and the AUC without the cosmetic
plates and without the plates made unusable by severity-2 fading or delayed scan alone. It reads only the caches
named (never family B, which is not a training family), so what it shows may steer a round.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from plateqc_model import data as D
from plateqc_model.metrics import roc_auc


def groups(p: np.ndarray, y: np.ndarray, sev: np.ndarray, threshold: float) -> dict:
    """The figures above for one split: scores `p` (probability of unusable), labels `y`
    (True = unusable) and per-type severities `sev` [N, types]."""
    y = np.asarray(y).astype(bool)
    worst = sev.max(axis=1)
    decisive = sev >= 2
    clean = ~y & (worst == 0)
    cosmetic = ~y & (worst > 0)
    at95 = float(np.quantile(p[y], 0.05)) if y.any() else float("nan")
    out = {
        "plates": int(len(y)), "unusable": int(y.sum()), "clean": int(clean.sum()),
        "cosmetic": int(cosmetic.sum()), "auc": roc_auc(y, p),
        "auc_clean_vs_unusable": roc_auc(y[y | clean], p[y | clean]),
        "auc_cosmetic_vs_unusable": roc_auc(y[y | cosmetic], p[y | cosmetic]),
        "threshold_at_recall_0.95": at95,
        "spec_clean_at_recall_0.95": float(np.mean(p[clean] < at95)),
        "spec_cosmetic_at_recall_0.95": float(np.mean(p[cosmetic] < at95)),
        "severity2_only": {},
    }
    # What the two hardest groups cost the ranking: the AUC without the unusable plates whose
    # decisive artifacts are only fading or delayed scan at severity 2, without the cosmetic
    # usable plates, and without both.
    fd = [D.TYPE_NAMES.index(t) for t in ("fading", "delayed_scan")]
    faint = y & (worst < 3) & (decisive.sum(axis=1) == decisive[:, fd].sum(axis=1))
    out["fading_delayed_only"] = int(faint.sum())
    for name, drop in (("auc_without_fading_delayed_only", faint),
                       ("auc_without_cosmetic", cosmetic),
                       ("auc_without_both", faint | cosmetic)):
        out[name] = roc_auc(y[~drop], p[~drop])
    for k, name in enumerate(D.TYPE_NAMES):
        only = y & decisive[:, k] & (decisive.sum(axis=1) == 1) & (worst < 3)
        if not only.any():
            continue
        sel = only | clean
        out["severity2_only"][name] = {
            "plates": int(only.sum()), "auc_vs_clean": roc_auc(y[sel], p[sel]),
            "median_score": float(np.median(p[only])),
            "below_threshold": float(np.mean(p[only] < threshold)),
        }
    return out


def scores(model: Path, x: np.ndarray, batch: int = 32) -> tuple[np.ndarray, float]:
    """P(unusable) of every plate by the exported model, and its shipped threshold."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    meta = s.get_modelmeta().custom_metadata_map
    classes = json.loads(meta["plateqc.classes"])
    u = classes.index("unusable")
    wants_target = any(i.name == "target_class" for i in s.get_inputs())
    out = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch].astype(np.float32)
        feed = {"image": xb}
        if wants_target:
            feed["target_class"] = np.full(len(xb), -1, np.int64)
        out.append(s.run(["probabilities"], feed)[0][:, u])
    return np.concatenate(out), float(meta["plateqc.threshold"])


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="plateqc.onnx")
    ap.add_argument("--val", default="val4,valc5,vald7,vale10")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--psp", default="plateqc-psp-v2")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    report = {"model": a.model, "splits": {}}
    for split in a.val.split(","):
        va = D.load_split(split, a.size, psp=a.psp)
        p, thr = scores(Path(a.model), va["x"])
        report["threshold"] = thr
        report["splits"][split] = groups(p, va["y"], va["sev"], thr)
        g = report["splits"][split]
        worst = sorted(g["severity2_only"].items(), key=lambda kv: kv[1]["auc_vs_clean"])[:4]
        print(f"{split}: AUC {g['auc']:.3f}, clean vs unusable {g['auc_clean_vs_unusable']:.3f}, "
              f"cosmetic vs unusable {g['auc_cosmetic_vs_unusable']:.3f}; hardest severity-2 "
              "types against clean: " + ", ".join(f"{n} {v['auc_vs_clean']:.3f}" for n, v in worst),
              flush=True)
    text = json.dumps(report, indent=1)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
