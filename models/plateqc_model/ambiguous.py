"""Rounds 16-17 (plan-1.3.md): unusable labels the network's input cannot carry.

The label rule calls every severity-2 global artifact unusable, yet after psp-v2 many of them
(a delayed scan, a fading) leave the input almost as it was. A plate is *ambiguous* when it is
unusable only through severity-2 artifacts of the five global types the survey examined, and
its input differs from its clean counterfactual twin no more than the family's usable plates
with severity-1 artifacts of those types differ from theirs (the 90th percentile, per type).

    python -m plateqc_model.ambiguous --train train4,trainc5,... --out work/ambiguous-16.json

Only caches with twins can be judged; the thresholds come from training splits only. Round 16
left the ambiguous plates out of training (`compact`); round 17 teaches them as usable
(`relabel`).
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from plateqc_model import data as D

# The survey's five: fading, delayed scan, brightness, motion, double exposure. Reversed plate
# (it prints a pattern no clean plate has) and the local types are left alone.
FIVE = ("fading", "delayed_scan", "brightness", "motion", "double_exposure")
PERCENTILE = 90.0
MIN_REFERENCE = 15
_FIVE_IDX = np.array([D.TYPE_NAMES.index(t) for t in FIVE])


def family_of(split: str) -> str:
    """The generator family of a split name: `train4`, `val4t`, `shifted4t` -> a; `trainc5`,
    `valc5t` -> c; and so on (the family letter follows the split's kind)."""
    m = re.fullmatch(r"(train|val|test|shifted)([a-z]?)\d+t?", split)
    if not m:
        raise ValueError(f"cannot tell the family of split {split!r}")
    return m.group(2) or "a"


def twin_index(data: dict) -> np.ndarray:
    """For each row, the row of its clean twin (-1 for twin rows and plates without one)."""
    pair, twin = data["pair"], data["twin"].astype(bool)
    where = {int(p): i for i, p in enumerate(pair) if twin[i]}
    return np.array([-1 if twin[i] else where.get(int(p), -1) for i, p in enumerate(pair)])


def twin_distance(data: dict, tw: np.ndarray | None = None) -> np.ndarray:
    """1 - Pearson correlation of input channel 0 between each plate and its twin inside the
    plate's letterbox rectangle; NaN where there is no twin."""
    tw = twin_index(data) if tw is None else tw
    x, rect = data["x"], data["rect"]
    d = np.full(len(tw), np.nan)
    for i in np.flatnonzero(tw >= 0):
        top, left, oh, ow = (int(v) for v in rect[i])
        a = x[i, 0, top:top + oh, left:left + ow].astype(np.float64).ravel()
        b = x[tw[i], 0, top:top + oh, left:left + ow].astype(np.float64).ravel()
        a, b = a - a.mean(), b - b.mean()
        den = np.sqrt((a * a).sum() * (b * b).sum())
        d[i] = 1.0 - (float((a * b).sum() / den) if den > 0 else 1.0)
    return d


def _groups(data: dict, names: list[str]) -> np.ndarray:
    """The family letter of every row (splits of a list are told apart by their pair ids)."""
    k = (data["pair"] // D.PAIR_STRIDE).astype(int)
    return np.array([family_of(names[j]) for j in k])


def _kinds(data: dict):
    """Per row: the five's severity-1 reference plates and the severity-2 candidates."""
    sev = data["sev"]
    five = np.zeros(sev.shape[1], bool)
    five[_FIVE_IDX] = True
    has = sev > 0
    only_five = ~(has & ~five).any(axis=1)
    plate = ~data["twin"].astype(bool)
    y = data["y"].astype(bool)
    reference = plate & ~y & only_five & has.any(axis=1) & (sev.max(axis=1) <= 1)
    strong = sev >= 2
    candidate = (plate & y & (sev.max(axis=1) < 3) & strong.any(axis=1)
                 & ~(strong & ~five).any(axis=1))
    return reference, candidate


def thresholds(data: dict, names: list[str], d: np.ndarray | None = None) -> dict:
    """tau per family and type: the 90th percentile of d over usable plates whose artifacts are
    all among the five at severity 1 and include the type (the family's pooled five when fewer
    than MIN_REFERENCE)."""
    d = twin_distance(data) if d is None else d
    fam = _groups(data, names)
    reference, _ = _kinds(data)
    out: dict = {}
    for f in sorted(set(fam)):
        ref_f = reference & (fam == f) & ~np.isnan(d)
        pooled = d[ref_f]
        out[f] = {"pooled": {"n": int(pooled.size),
                             "tau": float(np.percentile(pooled, PERCENTILE)) if pooled.size else None}}
        for t, k in zip(FIVE, _FIVE_IDX):
            vals = d[ref_f & (data["sev"][:, k] > 0)]
            if vals.size >= MIN_REFERENCE:
                out[f][t] = {"n": int(vals.size), "tau": float(np.percentile(vals, PERCENTILE)),
                             "from": "type"}
            else:
                out[f][t] = {"n": int(vals.size), "tau": out[f]["pooled"]["tau"], "from": "pooled"}
    return out


def ambiguous(data: dict, names: list[str], taus: dict, d: np.ndarray | None = None) -> np.ndarray:
    """Rows that are ambiguous by the round-16 rule (never a twin row, never a plate without a
    twin)."""
    d = twin_distance(data) if d is None else d
    fam = _groups(data, names)
    _, candidate = _kinds(data)
    out = np.zeros(len(d), bool)
    for i in np.flatnonzero(candidate & ~np.isnan(d)):
        types = [t for t, k in zip(FIVE, _FIVE_IDX) if data["sev"][i, k] >= 2]
        cut = [taus[fam[i]][t]["tau"] for t in types]
        if cut and all(c is not None for c in cut) and d[i] <= min(cut):
            out[i] = True
    return out


def summary(data: dict, names: list[str], drop: np.ndarray) -> dict:
    """How many unusable plates, candidates and dropped ones per family and type."""
    fam = _groups(data, names)
    _, candidate = _kinds(data)
    plate = ~data["twin"].astype(bool)
    y = data["y"].astype(bool)
    out = {}
    for f in sorted(set(fam)):
        in_f = fam == f
        row = {"unusable": int((plate & y & in_f).sum()), "candidates": int((candidate & in_f).sum()),
               "dropped": int((drop & in_f).sum())}
        for t, k in zip(FIVE, _FIVE_IDX):
            s2 = data["sev"][:, k] >= 2
            row[t] = {"candidates": int((candidate & in_f & s2).sum()),
                      "dropped": int((drop & in_f & s2).sum())}
        out[f] = row
    return out


def judge(data: dict, names: list[str]) -> tuple[np.ndarray, dict]:
    """The rule applied to training splits: the ambiguous rows, and a record of the rule, its
    thresholds and what it left out (what a run writes to its ambiguous.json)."""
    d = twin_distance(data)
    taus = thresholds(data, names, d)
    drop = ambiguous(data, names, taus, d)
    return drop, {"rule": {"five": list(FIVE), "percentile": PERCENTILE,
                           "min_reference": MIN_REFERENCE},
                  "taus": taus, "summary": summary(data, names, drop)}


def subset(data: dict, keep: np.ndarray) -> dict:
    return {k: v[keep] for k, v in data.items()}


def compact(data: dict, keep: np.ndarray, chunk: int = 512) -> dict:
    """As `subset`, moving the kept rows forward inside the arrays a chunk at a time instead of
    copying them (a kept row never moves past a later one, so nothing is overwritten before it
    is read). Returns views of the first rows."""
    idx = np.flatnonzero(keep)
    for v in data.values():
        for at in range(0, idx.size, chunk):
            rows = idx[at:at + chunk]
            v[at:at + rows.size] = v[rows]
    return {k: v[:idx.size] for k, v in data.items()}


def relabel(data: dict, rows: np.ndarray) -> dict:
    """Round 17: the given rows taught as usable plates with acceptable artifacts, in place.
    The class label becomes usable and the five types' severity drops to 1, because the ordinal
    severity term's ">= 2" must agree with the class rule (unusable at severity >= 2); artifact
    types, masks and twins are kept."""
    idx = np.flatnonzero(rows)
    data["y"][idx] = 0
    sev = data["sev"][idx]
    sev[:, _FIVE_IDX] = np.minimum(sev[:, _FIVE_IDX], 1)
    data["sev"][idx] = sev
    return data


def load_scored(split: str, size: int, psp: str, taus: dict | None = None) -> dict:
    """A split (or comma list) as scored: twin rows never count; with `taus`, the ambiguous
    plates are left out too."""
    data = D.load_split(split, size, psp=psp)
    if "twin" not in data:
        return data
    keep = ~data["twin"].astype(bool)
    if taus is not None:
        keep &= ~ambiguous(data, split.split(","), taus)
    return subset(data, keep)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True, help="comma list of training splits with twins")
    ap.add_argument("--val", default=None, help="comma list of twin validation splits to count")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--psp", default=D.pp.PSP_V2)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    tr = D.load_split(a.train, a.size, psp=a.psp)
    _, res = judge(tr, a.train.split(","))
    res["train"] = a.train
    del tr
    if a.val:
        res["val"] = {}
        for s in a.val.split(","):
            v = D.load_split(s, a.size, psp=a.psp)
            res["val"][s] = summary(v, [s], ambiguous(v, [s], res["taus"]))
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res["summary"], indent=1))


if __name__ == "__main__":
    main()
