"""How much a model's verdict on clean validation plates moves under the training style
randomisation (plan-1.3.md round 8, after its gate; training families only, never family B).

    python -m plateqc_model.style_check --model plateqc.onnx --model runs/cand-P/candidate.onnx \
        --out results/style-sensitivity.json

(`runs/cand-P/candidate.onnx` is the export `make SET=4 choose-8` writes from the run's weights.)

Per validation family: the first `--plates` artifact-free plates, each restyled once with a
draw of `style.draw` (seeded), P(unusable) before and after; the share passing at the model's
own threshold before and after (also for softened and sharpened draws apart) and the mean
change of the logit. A model invariant to this style family shows no change.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from plateqc_model import data as D
from plateqc_model import evaluate as EV
from plateqc_model import style as S


def unusable_prob(model: EV.Model, x: np.ndarray, batch: int = 16) -> np.ndarray:
    return np.concatenate([model.run(x[b:b + batch])["probabilities"][:, 1]
                           for b in range(0, len(x), batch)])


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--val", default="val4,valc5,vald7")
    ap.add_argument("--plates", type=int, default=150)
    ap.add_argument("--seed", type=int, default=77)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    models = {m: EV.Model(m) for m in a.model}
    first = next(iter(models.values()))
    rng = np.random.default_rng(a.seed)
    result = {"seed": a.seed, "plates_per_family": a.plates, "families": {}}
    for split in a.val.split(","):
        d = D.load_split(split, first.size, 10 * a.plates, psp=first.psp)
        clean = np.flatnonzero((d["y"] == 0) & ~d["types"].astype(bool).any(axis=1))[:a.plates]
        x = d["x"][clean].astype(np.float32)
        draws = [S.draw(rng) for _ in clean]
        xs = np.stack([S.restyle(x[i], d["rect"][c], *draws[i]) for i, c in enumerate(clean)])
        sharper = np.array([amount > 0 for _, amount in draws])
        per_model = {}
        for name, m in models.items():
            p0, p1 = unusable_prob(m, x), unusable_prob(m, xs)
            t = m.threshold
            per_model[name] = {
                "pass_before": float(np.mean(p0 < t)),
                "pass_after": float(np.mean(p1 < t)),
                "pass_after_sharpened": float(np.mean(p1[sharper] < t)),
                "pass_after_softened": float(np.mean(p1[~sharper] < t)),
                "mean_logit_change": float(np.mean(logit(p1) - logit(p0))),
                "mean_abs_prob_change": float(np.mean(np.abs(p1 - p0))),
            }
            print(split, name, json.dumps(per_model[name]), flush=True)
        result["families"][split] = {"plates": int(len(clean)), "sharpened": int(sharper.sum()),
                                     "models": per_model}
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
