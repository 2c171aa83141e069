"""Adapt the shipped model to one site: fine-tune it on the site's exported reviews.

    make -C models adapt LABELS=DIR [OUT=work/adapted.onnx]
    python -m plateqc_model.adapt --labels DIR --out work/adapted.onnx

DIR is what `plateqc export-labels DIR` writes (DIR/labels.csv, DIR/images/*.dcm). The result
is a contract model (models/README.md) that plateqc runs via `[paths] model = ".../adapted.onnx"`
(a running `watch` loads the file paths.model names again on SIGHUP, so replacing that file and
sending SIGHUP swaps the model without a restart), its adaptation card
`OUT.md` and the figures as `OUT.json`. The recipe below was written down before the adaptation
was run on any out-of-family plates, and nothing in it looks at any set but the site's own
labels and the in-family check set.

**Input.** Every row of DIR/labels.csv whose `label` is `usable` or `unusable`: the file is
decoded with pydicom and preprocessed with the shipped model's preprocessing
(`plateqc_ref.preprocess.preprocess_dataset`, `plateqc-psp-v2`, as `evaluate.py` does for its
DICOM path). Unreadable files, files whose sha256 differs from the row's, duplicates (same
content) and rows with another label are skipped and named. Refused (exit 2) with fewer than
MIN_LABELS readable labelled plates or fewer than MIN_PER_CLASS of either class.

**Site hold-out.** Per class, the HOLDOUT share of the plates (at least one) with the lowest
sha256("holdout:" + file sha256) is held out: deterministic, independent of the row order and
of anything but the files. The held-out plates are never trained on; they serve early stopping,
the choice among variants and the threshold.

**Replay and the in-family check (generated when missing, cached in work/cache).** Fine-tuning
batches mix site plates with replayed plates of the two training families: family A v3
(`train4`, plates 0-999 of split seed 1, with counterfactual twins: 1614 rows) and family C
(`trainc5`, plates 0-999 of split seed 21, with twins: 1615 rows), exactly the first shard of
each training cache, so an existing cache is reused and a fresh clone makes just that shard.
The in-family check set is family A's held-out split `test4`, plates 0-999 of split seed 3
(the first two of its shards). All three are made by `data.build_shard` (2 processes) the first
time, about 5 minutes on 2 cores; later runs load them.

**Fine-tuning.** From the shipped weights (`plateqc_weights.pt`), three variants, simplest
first:

| variant | trained | learning rate |
|---|---|---|
| `head` | the class head (the artifact head and the whole backbone stay as shipped) | 1e-3 |
| `last` | the `last` block, class and artifact heads | 3e-4 |
| `all` | the whole network | 1e-4 |

Each: AdamW (no weight decay), constant learning rate, STEPS steps of SITE_BATCH site plates
(cycling through shuffled passes over the site's training plates) plus REPLAY_BATCH replayed
plates (half family A, half family C); random flips of the whole batch as in training;
BatchNorm statistics frozen (eval mode: batches this small and this mixed would move them);
dropout on. Loss = class cross-entropy on the site plates + class cross-entropy on the replayed
plates (class weights 1 : 2 usable : unusable, as in training) + for `last` and `all` the
artifact-type BCE on the replayed plates (the site labels carry no artifact types; this keeps
the artifact scores from drifting). Torch seed SEED. Every EVAL_EVERY steps the site held-out
plates are scored; **early stopping** keeps, per variant, the checkpoint with the highest
held-out AUC (equal AUC: the lower held-out log loss, then the earlier step).

**Choice rule.** Each variant's kept checkpoint is measured on the in-family check set. Eligible
are the variants whose in-family AUC is at most MARGIN below the shipped model's. Among them the
highest site held-out AUC wins; equal AUC: the simpler variant (`head` < `last` < `all`). With no
eligible variant the one the same rule picks among all is taken, and the refusal below stops it.

**Threshold.** The largest threshold that keeps sensitivity >= TARGET_SENS on the site's
held-out unusable plates (`train.choose_threshold`; with fewer than 20 held-out unusable plates
that is the lowest held-out unusable score), taken from the exported file's own onnxruntime
scores and set THRESHOLD_SLACK (1e-6) below that plate's score, so that float rounding does not
put it under the threshold. It is the model's own threshold only: `plateqc
calibrate` chooses the site's threshold from its reviews anyway, and since calibrations are kept
per model version, the adapted model (version `<shipped>-site.<first 8 hex of the labels'
hash>`) needs its own calibration, from reviews of plates it judged.

**Export and verification.** `export.export_onnx` under the contract, **without** the optional
`feature_distance` output (its statistics were fitted on the shipped weights' features and do
not hold for changed weights; the output is optional), `export.check_contract`, then
`verify.verify` (the gradient check of VERIFY.md) on VERIFY_PLATES plates (site held-out first,
then in-family check plates). Any contract problem or a failed verification: refused (exit 4).

**Refusal on the original family.** The shipped file and the adapted file are both run by
onnxruntime on the same in-family check plates; both AUCs are printed; when the adapted one is
lower by more than MARGIN the model is refused (exit 3): OUT is not written (an existing OUT is
left as it was), the card goes to `<OUT stem>.refused.md`.
"""
from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import json
import math
import multiprocessing as mp
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parents[1]   # models/

from plateqc_model import data as D
from plateqc_model import export as E
from plateqc_model import verify as V
from plateqc_model.net import PlateNet, build
from plateqc_model.train import choose_threshold, roc_auc
from plateqc_ref import preprocess as pp

MIN_LABELS = 20
MIN_PER_CLASS = 5
HOLDOUT = 0.2
MARGIN = 0.01
TARGET_SENS = 0.95
SEED = 4242
STEPS = 150
EVAL_EVERY = 25
SITE_BATCH = 16
REPLAY_BATCH = 16
VERIFY_PLATES = 16
CW = (1.0, 2.0)
THRESHOLD_SLACK = 1e-6
TYPE_POS_WEIGHT_CAP = 6.0
# name, trained modules (None: all), learning rate -- simplest first
VARIANTS = [("head", ["cls_head"], 1e-3),
            ("last", ["last", "cls_head", "type_head", "type_map", "type_scale", "type_bias"],
             3e-4),
            ("all", None, 1e-4)]
# the training families' plates replayed and the in-family check set: the first plates of
# splits data.py and the Makefile cache (same seeds, same shard boundaries at full counts)
REPLAY = [{"family": "a", "split": "train4", "seed": 1, "count": 1000, "shard": 1000,
           "twins": True},
          {"family": "c", "split": "trainc5", "seed": 21, "count": 1000, "shard": 1000,
           "twins": True}]
CHECK = {"family": "a", "split": "test4", "seed": 3, "count": 1000, "shard": 500,
         "twins": False}

EXIT_TOO_FEW, EXIT_REFUSED, EXIT_VERIFY = 2, 3, 4


def log(msg: str):
    print(f"adapt: {msg}", flush=True)


# ---------------------------------------------------------------------------
# site labels
# ---------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_labels(folder: Path, size: int, psp: str) -> dict:
    """The site's labelled plates, preprocessed: x [n,2,S,S] float32, y [n], rows, skipped."""
    import pydicom
    csv_path = folder / "labels.csv"
    if not csv_path.exists():
        raise SystemExit(f"adapt: {csv_path} not found (the folder `plateqc export-labels` "
                         "writes: labels.csv and images/)")
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"file", "label"} <= set(rows[0]):
        raise SystemExit(f"adapt: {csv_path} lacks the columns file and label")
    xs, ys, used, skipped, seen = [], [], [], [], {}
    for r in rows:
        name = r.get("file", "")
        label = (r.get("label") or "").strip().lower()
        if label not in ("usable", "unusable"):
            skipped.append({"file": name, "why": f"label {label!r} is not usable/unusable"})
            continue
        path = folder / name
        try:
            sha = sha256_file(path)
            if r.get("sha256") and r["sha256"].strip().lower() != sha:
                skipped.append({"file": name, "why": "sha256 differs from labels.csv"})
                continue
            if sha in seen:
                skipped.append({"file": name, "why": f"same content as {seen[sha]}"})
                continue
            ds = pydicom.dcmread(str(path))
            x, _ = pp.preprocess_dataset(ds, size, psp)
        except Exception as e:   # unreadable, undecodable, not an image: named, not fatal
            skipped.append({"file": name, "why": f"{type(e).__name__}: {e}"[:200]})
            continue
        seen[sha] = name
        xs.append(np.asarray(x, np.float32))
        ys.append(int(label == "unusable"))
        used.append({"file": name, "sha256": sha, "label": label,
                     "sop_instance_uid": r.get("sop_instance_uid", "")})
    for s in skipped:
        log(f"skipped {s['file']}: {s['why']}")
    y = np.array(ys, np.int64)
    return {"x": np.stack(xs) if xs else np.zeros((0, 2, size, size), np.float32), "y": y,
            "rows": used, "skipped": skipped, "csv_rows": len(rows)}


def labels_hash(rows: list[dict]) -> str:
    """sha256 of the used (file content, label) pairs, in sorted order."""
    lines = sorted(f"{r['sha256']}\t{r['label']}\n" for r in rows)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def check_counts(y: np.ndarray, min_labels: int = MIN_LABELS, min_per_class: int = MIN_PER_CLASS):
    """None when there are enough labels, otherwise the refusal message."""
    n, nu = len(y), int(y.sum())
    if n < min_labels or min(nu, n - nu) < min_per_class:
        return (f"too few labelled plates to adapt on: {n} readable ({n - nu} usable, {nu} "
                f"unusable); need at least {min_labels}, and at least {min_per_class} of each "
                "class. Review more plates (plateqc override / review-import) and export again.")
    return None


def holdout_split(rows: list[dict], y: np.ndarray, share: float = HOLDOUT):
    """(train indices, held-out indices): per class the `share` (>= 1 plate) with the lowest
    sha256("holdout:" + file sha256)."""
    ho = []
    for c in (0, 1):
        idx = [i for i in range(len(y)) if y[i] == c]
        idx.sort(key=lambda i: hashlib.sha256(("holdout:" + rows[i]["sha256"]).encode())
                 .hexdigest())
        ho += idx[:max(1, int(round(share * len(idx))))]
    ho = np.array(sorted(ho), np.int64)
    tr = np.array([i for i in range(len(y)) if i not in set(ho.tolist())], np.int64)
    return tr, ho


# ---------------------------------------------------------------------------
# replay and check plates
# ---------------------------------------------------------------------------
def _split_name(spec: dict, default_count: int) -> str:
    """The canonical cache split when the count is the canonical one; otherwise a directory of
    its own (a smaller first shard in the training split's directory would be loaded as part of
    that split by data.load_split)."""
    return spec["split"] if spec["count"] == default_count else \
        f"adapt-{spec['split']}-{spec['count']}"


def shard_jobs(spec: dict, dirname: str, cache: Path, size: int, psp: str) -> list[dict]:
    jobs = []
    for s in range(0, spec["count"], spec["shard"]):
        e = min(spec["count"], s + spec["shard"])
        jobs.append({**spec, "dir": dirname, "start": s, "stop": e, "cache": str(cache),
                     "size": size, "psp": psp,
                     "path": str(cache / D.split_dir(dirname, size, psp).name
                                 / f"{s:06d}-{e:06d}.npz")})
    return jobs


def _build_shard(job: dict) -> str:
    """One shard, in a fresh process (the family is a per-process setting of data.py)."""
    from plateqc_model import data as DD
    DD.CACHE = Path(job["cache"])
    DD.FAMILY[0] = job["family"]
    DD._IMPORT_HASH[0] = None
    t0 = time.time()
    p = DD.build_shard(job["dir"], job["seed"], job["start"], job["stop"], job["size"], False,
                       twins=job["twins"], psp=job["psp"])
    print(f"adapt: made {p} ({time.time() - t0:.0f} s)", flush=True)
    return str(p)


def ensure_plates(specs: list[dict], defaults: list[int], cache: Path, size: int, psp: str,
                  workers: int = 2) -> list[list[dict]]:
    """Make the missing shards (in `workers` processes); returns each spec's shard jobs."""
    all_jobs = [shard_jobs(s, _split_name(s, d), cache, size, psp) for s, d in zip(specs, defaults)]
    todo = [j for jobs in all_jobs for j in jobs if not Path(j["path"]).exists()]
    if todo:
        log(f"generating {len(todo)} missing shard(s) of replay/check plates in {cache} "
            f"({sum(j['stop'] - j['start'] for j in todo)} plates; a few minutes, once)")
        t0 = time.time()
        # the longest first: family-A training shards (with twins) take longest
        todo.sort(key=lambda j: -(j["stop"] - j["start"]) * (2 if j["twins"] else 1))
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx,
                                 max_tasks_per_child=1) as ex:
            list(ex.map(_build_shard, todo))
        log(f"replay/check plates made in {time.time() - t0:.0f} s")
    return all_jobs


def load_shards(jobs: list[dict], keys=("x", "y", "types")) -> dict:
    parts = []
    for j in jobs:
        with np.load(j["path"]) as z:
            parts.append({k: z[k] for k in keys})
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}


# ---------------------------------------------------------------------------
# fine-tuning
# ---------------------------------------------------------------------------
def load_base(weights: Path, width: int) -> PlateNet:
    return build(torch.load(weights, map_location="cpu", weights_only=True), width,
                 len(D.TYPE_NAMES))


@torch.no_grad()
def predict(model: PlateNet, x: np.ndarray, bs: int = 64) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(x), bs):
        cls, _ = model(torch.from_numpy(np.asarray(x[i:i + bs], np.float32)))
        out.append(torch.softmax(cls, 1)[:, 1].numpy())
    return np.concatenate(out) if out else np.zeros(0)


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    y = np.asarray(y).astype(bool)
    return float(-np.mean(np.where(y, np.log(p), np.log(1 - p))))


def _train_mode(model: PlateNet):
    """Dropout on, BatchNorm statistics frozen."""
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()


def finetune(base: PlateNet, variant: tuple, site: dict, tr: np.ndarray, ho: np.ndarray,
             replay: list[dict], steps: int = STEPS, eval_every: int = EVAL_EVERY,
             seed: int = SEED) -> dict:
    """One variant; returns the kept checkpoint (state), its step and the held-out curve."""
    name, modules, lr = variant
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = copy.deepcopy(base)
    for p in model.parameters():
        p.requires_grad_(modules is None)
    if modules is not None:
        # the names of both heads (net.py); a name the model's head does not have is skipped
        for mod in modules:
            part = getattr(model, mod, None)
            if isinstance(part, torch.nn.Parameter):
                part.requires_grad_(True)
            elif part is not None:
                for p in part.parameters():
                    p.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    trains_types = modules is None or "type_head" in modules
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    cw = torch.tensor(CW)
    rtypes = np.concatenate([r["types"] for r in replay]).astype(np.float32)
    pos = rtypes.sum(0)
    pos_w = torch.from_numpy(np.minimum(TYPE_POS_WEIGHT_CAP, (len(rtypes) - pos)
                                        / np.maximum(pos, 1.0))).float()
    xs, ys = site["x"], site["y"]
    yho = ys[ho]
    order: list[int] = []
    per_family = [REPLAY_BATCH // len(replay)] * len(replay)
    per_family[0] += REPLAY_BATCH - sum(per_family)
    p0 = predict(model, xs[ho])
    curve = [{"step": 0, "heldout_auc": roc_auc(yho, p0), "heldout_log_loss": log_loss(yho, p0)}]
    best = None
    t0 = time.time()
    for step in range(1, steps + 1):
        while len(order) < SITE_BATCH:
            order += rng.permutation(tr).tolist()
        bs, order = order[:SITE_BATCH], order[SITE_BATCH:]
        rx, ry, rt = [], [], []
        for r, k in zip(replay, per_family):
            j = np.sort(rng.choice(len(r["y"]), size=k, replace=len(r["y"]) < k))
            rx.append(r["x"][j])
            ry.append(r["y"][j])
            rt.append(r["types"][j])
        x = torch.from_numpy(np.concatenate([xs[bs]] + [a.astype(np.float32) for a in rx]))
        y_site = torch.from_numpy(ys[bs].astype(np.int64))
        y_rep = torch.from_numpy(np.concatenate(ry).astype(np.int64))
        t_rep = torch.from_numpy(np.concatenate(rt).astype(np.float32))
        if rng.random() < 0.5:
            x = x.flip(3)
        if rng.random() < 0.5:
            x = x.flip(2)
        _train_mode(model)
        cls, typ = model(x)
        ns = len(bs)
        loss = (F.cross_entropy(cls[:ns], y_site, weight=cw)
                + F.cross_entropy(cls[ns:], y_rep, weight=cw))
        if trains_types:
            loss = loss + F.binary_cross_entropy_with_logits(typ[ns:], t_rep, pos_weight=pos_w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            p = predict(model, xs[ho])
            rec = {"step": step, "heldout_auc": roc_auc(yho, p),
                   "heldout_log_loss": log_loss(yho, p), "loss": float(loss.detach()),
                   "seconds": time.time() - t0}
            curve.append(rec)
            log(f"{name} step {step}: held-out AUC {rec['heldout_auc']:.4f} log loss "
                f"{rec['heldout_log_loss']:.4f} ({rec['seconds']:.0f} s)")
            key = (rec["heldout_auc"], -rec["heldout_log_loss"])
            if best is None or key > best[0]:   # equal: the earlier step stays
                best = (key, step, copy.deepcopy(model.state_dict()))
    return {"variant": name, "lr": lr, "modules": modules or "all", "step": best[1],
            "state": best[2], "curve": curve, "seconds": time.time() - t0}


def choose_variant(results: list[dict], base_check_auc: float, margin: float) -> tuple[dict, str]:
    """The choice rule (module docstring): eligible by the in-family check, then the highest site
    held-out AUC, equal AUC -> the simpler variant (results are in VARIANTS order)."""
    elig = [r for r in results if r["check_auc"] >= base_check_auc - margin]
    pool = elig or results
    best = pool[0]
    for r in pool[1:]:
        if r["heldout_auc"] > best["heldout_auc"]:
            best = r
    why = (f"highest site held-out AUC ({best['heldout_auc']:.4f}) among the variants within "
           f"{margin} of the shipped in-family AUC ({', '.join(r['variant'] for r in elig)})"
           if elig else
           f"no variant stays within {margin} of the shipped in-family AUC; the highest site "
           f"held-out AUC among all ({best['heldout_auc']:.4f}) is taken, and refused below")
    ties = [r["variant"] for r in pool if r["heldout_auc"] == best["heldout_auc"]]
    if len(ties) > 1:
        why += f"; tied with {', '.join(t for t in ties if t != best['variant'])}: the simpler wins"
    return best, why


# ---------------------------------------------------------------------------
# onnxruntime figures
# ---------------------------------------------------------------------------
def ort_scores(path: Path, x: np.ndarray, bs: int = 16) -> np.ndarray:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    out = []
    for i in range(0, len(x), bs):
        xb = np.asarray(x[i:i + bs], np.float32)
        r = sess.run(["probabilities"], {"image": xb,
                                         "target_class": np.full(len(xb), 1, np.int64)})
        out.append(r[0][:, 1])
    return np.concatenate(out)


def rates(y: np.ndarray, p: np.ndarray, thr: float) -> dict:
    y = np.asarray(y).astype(bool)
    return {"auc": roc_auc(y, p), "threshold": float(thr),
            "sensitivity": float((p[y] >= thr).mean()) if y.any() else None,
            "specificity": float((p[~y] < thr).mean()) if (~y).any() else None,
            "n": int(len(y)), "n_unusable": int(y.sum())}


def set_metadata(path: Path, values: dict):
    import onnx
    m = onnx.load(str(path))
    for p in m.metadata_props:
        if p.key in values:
            p.value = values[p.key]
    onnx.save_model(m, str(path))


def onnx_metadata(path: Path) -> dict:
    import onnx
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


# ---------------------------------------------------------------------------
# the card
# ---------------------------------------------------------------------------
def _f(v, nd=4):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def write_card(res: dict, path: Path):
    L = res["labels"]
    b, a = res["heldout"]["shipped"], res["heldout"]["adapted"]
    cb, ca = res["in_family"]["shipped"], res["in_family"]["adapted"]
    status = ("**REFUSED**: " + res["refused"]) if res.get("refused") else "**written**"
    lines = [
        f"# Adaptation card: {res.get('model_version', '?')}",
        "",
        f"Adapted from plateqc model {res['base']['model_version']} (`{res['base']['onnx']}`, "
        f"weights `{res['base']['weights']}`) on one site's reviews by "
        "`plateqc_model/adapt.py` (the recipe and its rules are in its docstring and in "
        "models/README.md, \"Adapting to a site\"). Result: " + status + ".",
        "",
        "## Labels used",
        "",
        f"- folder `{L['folder']}`: {L['csv_rows']} rows in labels.csv, {L['used']} used "
        f"({L['usable']} usable, {L['unusable']} unusable), {len(L['skipped'])} skipped",
        f"- labels hash (sha256 of the sorted file-sha256 / label pairs): `{L['sha256']}`",
        f"- held out for early stopping, the choice and the threshold: {L['heldout']} "
        f"({L['heldout_unusable']} unusable); trained on {L['train']}",
    ]
    for s in L["skipped"][:20]:
        lines.append(f"  - skipped `{s['file']}`: {s['why']}")
    lines += [
        f"- replayed against forgetting: {res['replay']['rows']} rows "
        f"({', '.join(res['replay']['splits'])}); in-family check: {res['check']['plates']} "
        f"plates ({res['check']['split']})",
        "",
        "## Variants (from the shipped weights)",
        "",
        "| variant | trained | lr | kept step (of %d) | site held-out AUC | held-out log loss "
        "| in-family AUC (torch) |" % res["recipe"]["steps"],
        "|---|---|---|---|---|---|---|",
    ]
    for v in res["variants"]:
        mods = v["modules"] if isinstance(v["modules"], str) else ", ".join(v["modules"])
        lines.append(f"| `{v['variant']}` | {mods} | {v['lr']:g} | {v['step']} | "
                     f"{_f(v['heldout_auc'])} | {_f(v['heldout_log_loss'])} | "
                     f"{_f(v['check_auc'])} |")
    lines += [
        "",
        f"Chosen: **`{res['chosen']}`**: {res['chosen_why']}.",
        "",
        "## Figures before / after (onnxruntime, the files themselves)",
        "",
        "| set | plates (unusable) | AUC shipped | AUC adapted | sens / spec shipped @ its "
        "threshold | sens / spec adapted @ its threshold |",
        "|---|---|---|---|---|---|",
        f"| site held-out | {b['n']} ({b['n_unusable']}) | {_f(b['auc'])} | {_f(a['auc'])} | "
        f"{_f(b['sensitivity'], 3)} / {_f(b['specificity'], 3)} | "
        f"{_f(a['sensitivity'], 3)} / {_f(a['specificity'], 3)} |",
        f"| in-family check ({res['check']['split']}) | {cb['n']} ({cb['n_unusable']}) | "
        f"{_f(cb['auc'])} | {_f(ca['auc'])} | {_f(cb['sensitivity'], 3)} / "
        f"{_f(cb['specificity'], 3)} | {_f(ca['sensitivity'], 3)} / {_f(ca['specificity'], 3)} |",
        "",
        f"- in-family AUC change {res['in_family']['auc_change']:+.4f}; refusal when lower than "
        f"-{res['recipe']['margin']}",
        f"- the site held-out plates also chose the checkpoint, the variant and the threshold: "
        "their \"after\" figures are optimistic; judge the model on plates it has not seen",
        f"- threshold {res['threshold']!r} (shipped {res['base']['threshold']!r}): the largest "
        f"with sensitivity >= {res['recipe']['target_sens']} on the site held-out unusable "
        f"plates, from this file's own scores, {THRESHOLD_SLACK:g} below the boundary plate's. "
        "`plateqc calibrate` chooses the site's threshold from its reviews anyway; "
        "calibrations are per model version, so calibrate this version on plates it judged",
        f"- verification (`verify.verify`, {res['verify'].get('plates', 0)} plates): "
        f"{'PASS' if res['verify'].get('pass') else 'FAIL'}, max relative error "
        f"{res['verify'].get('max_rel_error_all', float('nan')):.2e}",
        "- exported without the optional `feature_distance` output (its statistics belong to "
        "the shipped weights)",
        "",
        "## Commands",
        "",
        "```sh",
        f"make -C models adapt LABELS={L['folder']} OUT={res['out']}",
        f"# {res['command']}",
        "# then in plateqc.toml:  [paths] model = \"" + str(Path(res['out']).resolve()) + "\"",
        "# and restart plateqc (or move this file over the one paths.model names and send the",
        "# running watch SIGHUP); once reviewers have judged plates with it:",
        "# plateqc calibrate --by NAME",
        "```",
        "",
        f"Seconds: {res['seconds']:.0f} (data {res['timing']['data']:.0f}, fine-tuning "
        f"{res['timing']['finetune']:.0f}, export + verification {res['timing']['export']:.0f}).",
    ]
    path.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", required=True, help="the folder `plateqc export-labels` wrote")
    ap.add_argument("--out", default=str(HERE / "work" / "adapted.onnx"))
    ap.add_argument("--weights", default=str(HERE / "plateqc_weights.pt"))
    ap.add_argument("--base-model", default=str(HERE / "plateqc.onnx"),
                    help="the shipped file (its metadata and its in-family figures)")
    ap.add_argument("--margin", type=float, default=MARGIN,
                    help="refuse when the in-family AUC falls by more than this")
    ap.add_argument("--cache", default=str(D.CACHE), help="where replay/check plates are cached")
    ap.add_argument("--replay-count", type=int, default=None,
                    help="plates per training family replayed (default 1000; tests only)")
    ap.add_argument("--check-count", type=int, default=None,
                    help="in-family check plates (default 1000; tests only)")
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--eval-every", type=int, default=EVAL_EVERY)
    ap.add_argument("--variants", default=",".join(v[0] for v in VARIANTS))
    ap.add_argument("--verify-plates", type=int, default=VERIFY_PLATES)
    ap.add_argument("--min-labels", type=int, default=MIN_LABELS)
    ap.add_argument("--min-per-class", type=int, default=MIN_PER_CLASS)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t_start = time.time()
    out = Path(a.out)
    if out.suffix != ".onnx":
        raise SystemExit(f"adapt: --out {out} should end in .onnx (the card is written beside "
                         "it with .md)")
    weights = Path(a.weights)
    wj = json.loads(weights.with_suffix(".json").read_text())
    size, psp, width = wj["size"], wj["preprocessing"], wj["width"]
    base_md = onnx_metadata(Path(a.base_model))
    base_version = base_md["plateqc.model_version"]
    base_threshold = float(base_md["plateqc.threshold"])

    # --- the site's labels
    folder = Path(a.labels)
    site = read_labels(folder, size, psp)
    msg = check_counts(site["y"], a.min_labels, a.min_per_class)
    if msg:
        print(f"adapt: refused: {msg}", file=sys.stderr)
        return EXIT_TOO_FEW
    lh = labels_hash(site["rows"])
    version = f"{base_version}-site.{lh[:8]}"
    tr, ho = holdout_split(site["rows"], site["y"])
    y = site["y"]
    log(f"{len(y)} labelled plates ({int((y == 0).sum())} usable, {int(y.sum())} unusable), "
        f"{len(site['skipped'])} skipped; training on {len(tr)}, holding out {len(ho)} "
        f"({int(y[ho].sum())} unusable); version {version}")

    # --- replay and check plates
    t0 = time.time()
    cache = Path(a.cache)
    rspecs = [dict(s, count=a.replay_count or s["count"]) for s in REPLAY]
    cspec = dict(CHECK, count=a.check_count or CHECK["count"])
    jobs = ensure_plates(rspecs + [cspec], [s["count"] for s in REPLAY] + [CHECK["count"]],
                         cache, size, psp)
    replay = [load_shards(j) for j in jobs[:-1]]
    check = load_shards(jobs[-1], keys=("x", "y"))
    t_data = time.time() - t0
    log(f"replay {sum(len(r['y']) for r in replay)} rows, check {len(check['y'])} plates "
        f"({t_data:.0f} s)")

    # --- fine-tuning
    t0 = time.time()
    base = load_base(weights, width)
    base_check_torch = roc_auc(check["y"], predict(base, check["x"]))
    log(f"shipped model, in-family check AUC (torch) {base_check_torch:.4f}")
    wanted = [v.strip() for v in a.variants.split(",") if v.strip()]
    unknown = set(wanted) - {v[0] for v in VARIANTS}
    if unknown:
        raise SystemExit(f"adapt: unknown variants {sorted(unknown)}")
    results = []
    for variant in [v for v in VARIANTS if v[0] in wanted]:
        r = finetune(base, variant, site, tr, ho, replay, a.steps, a.eval_every)
        m = copy.deepcopy(base)
        m.load_state_dict(r["state"])
        kept = [c for c in r["curve"] if c["step"] == r["step"]][0]
        r.update(heldout_auc=kept["heldout_auc"], heldout_log_loss=kept["heldout_log_loss"],
                 check_auc=roc_auc(check["y"], predict(m, check["x"])))
        log(f"{r['variant']}: kept step {r['step']}, held-out AUC {r['heldout_auc']:.4f}, "
            f"in-family AUC {r['check_auc']:.4f} ({r['seconds']:.0f} s)")
        results.append(r)
    chosen, why = choose_variant(results, base_check_torch, a.margin)
    log(f"chosen {chosen['variant']}: {why}")
    model = copy.deepcopy(base)
    model.load_state_dict(chosen["state"])
    model.eval()
    # provisional (torch); the exported file's own scores set it below
    threshold = choose_threshold(y[ho], predict(model, site["x"][ho]), TARGET_SENS)
    t_ft = time.time() - t0

    # --- export, contract, verification
    t0 = time.time()
    recipe = {"steps": a.steps, "eval_every": a.eval_every, "site_batch": SITE_BATCH,
              "replay_batch": REPLAY_BATCH, "seed": SEED, "holdout": HOLDOUT,
              "margin": a.margin, "target_sens": TARGET_SENS,
              "variants": [[n, m or "all", lr] for n, m, lr in VARIANTS if n in wanted],
              "replay": rspecs, "check": cspec}
    data_hash = hashlib.sha256(json.dumps({"base": base_md.get("plateqc.data_hash", ""),
                                           "labels": lh, "recipe": recipe},
                                          sort_keys=True).encode()).hexdigest()
    layers = list(PlateNet.LAYERS)
    md = E.build_metadata(
        input_size=size, layers=layers, artifact_types=D.artifact_types(), threshold=threshold,
        artifact_threshold=float(base_md.get("plateqc.artifact_threshold", 0.5)),
        model_name=base_md.get("plateqc.model_name", "plateqc-psp-cnn"), model_version=version,
        training_seed=SEED, data_hash=data_hash, preprocessing=psp,
        extra={"plateqc.adapted_from": base_version, "plateqc.site_labels_sha256": lh,
               "plateqc.adaptation": f"{chosen['variant']} (step {chosen['step']}), "
                                     f"{len(y)} site labels"})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.onnx")
    E.export_onnx(model, layers, tmp, input_size=size, metadata=md)
    # the threshold from the scores of the file itself (onnxruntime, as plateqc runs it), 1e-6
    # below the boundary plate's score: the rule picks a threshold equal to one held-out score,
    # and float rounding (BatchNorm folded, float32) must not drop that plate below it
    threshold = max(0.0, choose_threshold(y[ho], ort_scores(tmp, site["x"][ho]), TARGET_SENS)
                    - THRESHOLD_SLACK)
    set_metadata(tmp, {"plateqc.threshold": repr(float(threshold))})
    problems = E.check_contract(tmp)
    vimgs = np.concatenate([site["x"][ho], check["x"][:max(0, a.verify_plates - len(ho))]])
    vimgs = vimgs[:a.verify_plates].astype(np.float64)
    vr = V.verify(tmp, model, layers, vimgs) if not problems else {"pass": False}
    vsum = {k: v for k, v in vr.items() if k in ("plates", "pass", "max_rel_error_all",
                                                   "batch1_vs_batch4_rel")}
    if "relu_flips" in vr:
        vsum["relu_flips"] = vr["relu_flips"]["elements"]
        vsum["relu_flips_outside_tol"] = vr["relu_flips"]["outside_tol"]
    log(f"contract problems: {problems or 'none'}; verification "
        f"{'PASS' if vr.get('pass') else 'FAIL'}")

    # --- before / after with onnxruntime, refusal
    base_onnx = Path(a.base_model)
    pb_ho, pa_ho = ort_scores(base_onnx, site["x"][ho]), ort_scores(tmp, site["x"][ho])
    pb_ck, pa_ck = ort_scores(base_onnx, check["x"]), ort_scores(tmp, check["x"])
    fig = {"heldout": {"shipped": rates(y[ho], pb_ho, base_threshold),
                       "adapted": rates(y[ho], pa_ho, threshold)},
           "in_family": {"shipped": rates(check["y"], pb_ck, base_threshold),
                         "adapted": rates(check["y"], pa_ck, threshold)}}
    change = fig["in_family"]["adapted"]["auc"] - fig["in_family"]["shipped"]["auc"]
    fig["in_family"]["auc_change"] = change
    print(f"adapt: in-family AUC ({cspec['split']}, {len(check['y'])} plates): shipped "
          f"{fig['in_family']['shipped']['auc']:.4f}, adapted "
          f"{fig['in_family']['adapted']['auc']:.4f} (change {change:+.4f}, refusal below "
          f"-{a.margin}); site held-out AUC: shipped {fig['heldout']['shipped']['auc']:.4f}, "
          f"adapted {fig['heldout']['adapted']['auc']:.4f}", flush=True)
    t_exp = time.time() - t0
    refused, code = None, 0
    if problems or not vr.get("pass"):
        refused = (f"the export failed the contract ({problems})" if problems else
                   "the export failed the gradient verification")
        code = EXIT_VERIFY
    elif change < -a.margin:
        refused = (f"in-family AUC {fig['in_family']['adapted']['auc']:.4f} is "
                   f"{-change:.4f} below the shipped model's "
                   f"{fig['in_family']['shipped']['auc']:.4f} (margin {a.margin})")
        code = EXIT_REFUSED
    res = {
        "model_version": version, "out": str(out), "refused": refused,
        "command": "python -m plateqc_model.adapt " + " ".join(argv if argv is not None
                                                               else sys.argv[1:]),
        "base": {"model_version": base_version, "onnx": str(base_onnx), "weights": str(weights),
                 "threshold": base_threshold},
        "labels": {"folder": str(folder), "csv_rows": site["csv_rows"], "used": int(len(y)),
                   "usable": int((y == 0).sum()), "unusable": int(y.sum()), "sha256": lh,
                   "skipped": site["skipped"], "train": int(len(tr)), "heldout": int(len(ho)),
                   "heldout_unusable": int(y[ho].sum()),
                   "heldout_files": [site["rows"][i]["file"] for i in ho]},
        "replay": {"rows": int(sum(len(r["y"]) for r in replay)),
                   "splits": [f"{s['split']} plates 0-{s['count'] - 1}" for s in rspecs]},
        "check": {"split": f"{cspec['split']} plates 0-{cspec['count'] - 1}",
                  "plates": int(len(check["y"]))},
        "recipe": recipe,
        "variants": [{k: v for k, v in r.items() if k != "state"} for r in results],
        "chosen": chosen["variant"], "chosen_step": chosen["step"], "chosen_why": why,
        "in_family_torch": {"shipped": base_check_torch, "adapted": chosen["check_auc"]},
        "threshold": threshold, **fig, "verify": vsum, "contract_problems": problems,
        "timing": {"data": t_data, "finetune": t_ft, "export": t_exp},
        "seconds": time.time() - t_start,
    }
    if refused:
        tmp.unlink(missing_ok=True)
        card = out.with_name(out.stem + ".refused.md")
        write_card(res, card)
        out.with_name(out.stem + ".refused.json").write_text(json.dumps(res, indent=1) + "\n")
        print(f"adapt: REFUSED: {refused}; {out} not written"
              + (" (the existing file is left as it was)" if out.exists() else "")
              + f"; card {card}", file=sys.stderr, flush=True)
        return code
    tmp.replace(out)
    for stale in (out.with_name(out.stem + ".refused.md"),
                  out.with_name(out.stem + ".refused.json")):
        stale.unlink(missing_ok=True)
    write_card(res, out.with_suffix(".md"))
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    log(f"wrote {out} ({version}), card {out.with_suffix('.md')} ({res['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
