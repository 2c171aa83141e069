"""Feature distance: the contract's optional `feature_distance` output (inputs unlike training).

    python -m plateqc_model.ood fit --run runs/cand-M --out plateqc_ood.npz
    python -m plateqc_model.ood measure --model plateqc.onnx --out results/ood-1.3.2.json

From 1.3.2 (plan-1.3.md "Unfamiliar score, round 2", candidate c+): multi-layer activation
statistics. For each layer l of SCORE_LAYERS (`stem`, `early`, `middle`, `last`; each a
conv-BN-ReLU output [C, h, w], eval mode, the shipped weights) the features are the per-channel
spatial mean and population standard deviation, f_l = cat(mean_hw(a), sqrt(mean_hw((a -
mean_hw(a))^2))) [2C]; d_l = sqrt(mean_k (W_l (f_l - mu_l))_k^2) (RMS Mahalanobis, as 1.3.1's
score); the score is max_l d_l / s_l, with s_l the 99th percentile of d_l on the validation
plates. It reacts to inputs whose low-level texture and intensity statistics training never
had (other modalities, noise, smooth non-dental images, panoramic-like strips) where 1.3.1's
pooled `last` distance did not.

Fit (`fit`, also run by ship.py when plateqc_ood.npz is missing, of another KIND, or belongs to
other weights), all of it fixed before anything is measured:

- training plates: an evenly spaced subset of each training cache of the run (train4 and
  trainc5 for 1.3.x), FIT_PER_SPLIT rows each, row i = round(k (n - 1) / (FIT_PER_SPLIT - 1))
  over all n rows of the cache in index order, so counterfactual twins are included as they
  come;
- per layer: mu_l = the mean of f_l; Sigma_l = the Ledoit-Wolf covariance (the sample covariance
  shrunk towards mean(diag) * I with the intensity Ledoit and Wolf's formula gives; no free
  parameter); Sigma_l = L L^T (Cholesky), W_l = L^-1; mu_l and W_l rounded to float32 (the
  values the ONNX file holds), everything after uses those;
- s_l: the PERCENTILE-th percentile (numpy linear) of d_l over the validation caches of the run
  (val4 + valc5), rounded to float32;
- the threshold: the PERCENTILE-th percentile of the score max_l d_l / s_l over the same
  validation plates, rounded to float32 (so the daemon's f32 parse is exact). A plate with
  score >= threshold goes to human review (where the site turns that on).

1.3.1's score (KIND_POOLED: cat(amax, mean) of `last`, one Mahalanobis RMS) is still read by
`load` and exported by `export.Explained` for files that carry it.

Family B (models/famb) takes no part in any of this; `measure` reads it (the gate's 1000
plates, gate.build_gate_split) only after plateqc_ood.npz and the shipped file exist.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parents[1]   # models/

from plateqc_model import data as D

FEATURE_LAYER = "last"
SCORE_LAYERS = ["stem", "early", "middle", "last"]
KIND = "layer-meanstd-max"        # 1.3.2
KIND_POOLED = "pooled-last"       # 1.3.1
FIT_PER_SPLIT = 4000
PERCENTILE = 99.0
DESCRIPTION = ("Max over layers stem, early, middle, last of d_l / s_l, where d_l is the RMS "
               "Mahalanobis distance sqrt(mean_k (W_l (f_l - mu_l))_k^2) of the layer's "
               "per-channel spatial mean and standard deviation f_l from their mean mu_l over "
               "8000 training plates (families A and C; W_l = inverse Cholesky factor of a "
               "Ledoit-Wolf covariance) and s_l is d_l's 99th percentile on the validation "
               "plates; large on inputs whose texture and intensity statistics training never "
               "had (other modalities, noise, non-dental images).")
DESCRIPTION_POOLED = ("RMS over the 256 dimensions of the whitened pooled features of layer `last` "
               "(global max and mean of its activation, what the heads read), "
               "sqrt(mean_k (W (f - mu))_k^2) with mu and W = inverse Cholesky factor of a "
               "Ledoit-Wolf covariance fitted on 8000 training plates (families A and C); "
               "about 1 on training plates, larger on plates unlike them.")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def pooled(a: torch.Tensor) -> torch.Tensor:
    """What PlateNet's heads read (before dropout): [N, 2C]."""
    return torch.cat([a.amax(dim=(2, 3)), a.mean(dim=(2, 3))], dim=1)


def mean_std(a: torch.Tensor) -> torch.Tensor:
    """Per-channel spatial mean and population standard deviation of [N, C, h, w]: [N, 2C]
    (the formula the exported graph uses, export.Explained)."""
    m = a.mean(dim=(2, 3))
    v = ((a - m[:, :, None, None]) ** 2).mean(dim=(2, 3))
    return torch.cat([m, torch.sqrt(v)], dim=1)


@torch.no_grad()
def layer_features(model: torch.nn.Module, x: np.ndarray, batch: int = 64,
                   layers: list[str] = SCORE_LAYERS) -> dict[str, np.ndarray]:
    """mean_std of each layer's activation for plates x [N, 2, S, S] (eval mode, float32
    forward), as float64: {layer: [N, 2C]}."""
    model.eval()
    got = {}
    hs = [model.get_submodule(n).register_forward_hook(
        lambda _m, _i, out, _n=n: got.__setitem__(_n, out)) for n in layers]
    out = {n: [] for n in layers}
    try:
        for i in range(0, len(x), batch):
            model(torch.from_numpy(np.asarray(x[i:i + batch], np.float32)))
            for n in layers:
                out[n].append(mean_std(got[n]).double().numpy())
    finally:
        for h in hs:
            h.remove()
    return {n: np.concatenate(v) for n, v in out.items()}


@torch.no_grad()
def features(model: torch.nn.Module, x: np.ndarray, batch: int = 64,
             layer: str = FEATURE_LAYER) -> np.ndarray:
    """Pooled features of `layer` for plates x [N, 2, S, S] (eval mode, float32), as float64."""
    model.eval()
    got = {}
    h = model.get_submodule(layer).register_forward_hook(
        lambda _m, _i, out: got.__setitem__("a", out))
    try:
        out = []
        for i in range(0, len(x), batch):
            model(torch.from_numpy(np.asarray(x[i:i + batch], np.float32)))
            out.append(pooled(got["a"]).double().numpy())
    finally:
        h.remove()
    return np.concatenate(out) if out else np.zeros((0, 0))


def spaced_rows(n: int, k: int) -> np.ndarray:
    """k evenly spaced row indices of 0..n-1 (all of them when k >= n)."""
    if k >= n:
        return np.arange(n)
    return np.round(np.linspace(0, n - 1, k)).astype(np.int64)


def cached_rows(split: str, size: int, psp: str, rows: int | None = None):
    """The rows of a cached split, shard by shard: (x, y, row indices, rows in the split) for
    each shard holding any of them; `rows`: that many evenly spaced over the whole split
    (spaced_rows), all of them when None."""
    files = D.shard_files(split, size, psp)
    if not files:
        raise FileNotFoundError(f"no cached shards in {D.split_dir(split, size, psp)}")
    counts = []
    for f in files:
        with np.load(f) as z:
            counts.append(len(z["y"]))
    n = int(sum(counts))
    want = spaced_rows(n, rows) if rows is not None else np.arange(n)
    start = 0
    for f, c in zip(files, counts):
        sel = want[(want >= start) & (want < start + c)] - start
        if len(sel):
            with np.load(f) as z:
                yield z["x"][sel], z["y"][sel].astype(np.int64), sel + start, n
        start += c


def split_features(model, split: str, size: int, psp: str, rows: int | None = None,
                   batch: int = 64, kind: str = KIND_POOLED) -> dict:
    """Features (and labels) of a cached split, shard by shard; `rows`: evenly spaced subset.
    KIND_POOLED: "f" [n, 256] (1.3.1's); KIND: "f" = {layer: [n, 2C]}."""
    F, Y, idx, total = [], [], [], 0
    for x, y, at, total in cached_rows(split, size, psp, rows):
        Y.append(y)
        F.append(features(model, x, batch) if kind == KIND_POOLED
                 else layer_features(model, x, batch))
        idx.append(at)
    f = (np.concatenate(F) if kind == KIND_POOLED
         else {n: np.concatenate([p[n] for p in F]) for n in F[0]})
    return {"f": f, "y": np.concatenate(Y), "rows": np.concatenate(idx),
            "n_cache": total}


def ledoit_wolf(X: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf (2004) shrinkage of the sample covariance of X [n, p] towards
    mean(diag) * I; returns (covariance, shrinkage intensity). As sklearn's LedoitWolf
    (assume_centered=False), written out in numpy."""
    X = np.asarray(X, np.float64)
    n, p = X.shape
    Xc = X - X.mean(0)
    S = Xc.T @ Xc / n
    m = np.trace(S) / p
    d2 = ((S - m * np.eye(p)) ** 2).sum() / p
    # beta^2 = 1/n^2 sum_k ||x_k x_k^T - S||_F^2 / p
    #        = (sum_k ||x_k||^4 / n - ||S||_F^2) / (n p)
    sq = (Xc ** 2).sum(1)
    b2 = ((sq ** 2).sum() / n - (S ** 2).sum()) / (n * p)
    b2 = min(b2, d2)
    shrink = float(b2 / d2) if d2 > 0 else 1.0
    return (1 - shrink) * S + shrink * m * np.eye(p), shrink


def distance(F: np.ndarray, mu: np.ndarray, W: np.ndarray) -> np.ndarray:
    """d = sqrt(mean_k (W (f - mu))_k^2), float64."""
    Z = (np.asarray(F, np.float64) - np.asarray(mu, np.float64)) @ np.asarray(W, np.float64).T
    return np.sqrt((Z * Z).mean(1))


def layer_distances(F: dict, stats: dict) -> np.ndarray:
    """[n, L]: d_l / s_l for each layer of stats["layers"] (float64, file values)."""
    return np.stack([distance(F[n], stats["mu"][n], stats["W"][n]) / float(stats["scale"][n])
                     for n in stats["layers"]], axis=1)


def score(F: dict, stats: dict) -> np.ndarray:
    """The 1.3.2 score max_l d_l / s_l from layer features F ({layer: [n, 2C]})."""
    return layer_distances(F, stats).max(1)


def whitener(F: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """(mu, W = L^-1, shrinkage, covariance eigenvalue min/max), mu and W as float32."""
    mu = F.mean(0)
    cov, shrink = ledoit_wolf(F)
    L = np.linalg.cholesky(cov)
    W = np.tril(np.linalg.solve(L, np.eye(len(L))))
    ev = np.linalg.eigvalsh(cov)
    return mu.astype(np.float32), W.astype(np.float32), shrink, np.array([ev.min(), ev.max()])


def fit(model, train_splits: list[str], val_splits: list[str], size: int, psp: str,
        per_split: int = FIT_PER_SPLIT, percentile: float = PERCENTILE,
        weights_sha256: str = "unknown", layers: list[str] = SCORE_LAYERS) -> dict:
    """The 1.3.2 statistics (KIND); the npz layout: layers, mu_<l>, W_<l>, scale_<l>, ..."""
    t0 = time.time()
    tr = [split_features(model, s, size, psp, per_split, kind=KIND) for s in train_splits]
    va = [split_features(model, s, size, psp, kind=KIND) for s in val_splits]
    out = {"kind": np.array(KIND), "layers": np.array(layers)}
    st = {"layers": list(layers), "mu": {}, "W": {}, "scale": {}}
    for n in layers:
        F = np.concatenate([t["f"][n] for t in tr])
        mu, W, shrink, ev = whitener(F)
        dv = np.concatenate([distance(v["f"][n], mu, W) for v in va])
        sc = float(np.float32(np.percentile(dv, percentile)))
        st["mu"][n], st["W"][n], st["scale"][n] = mu, W, sc
        out.update({f"mu_{n}": mu, f"W_{n}": W, f"scale_{n}": np.float64(sc),
                    f"shrinkage_{n}": np.float64(shrink), f"covariance_eig_min_max_{n}": ev,
                    f"train_d_percentiles_50_99_{n}": np.percentile(
                        distance(F, mu, W), [50, 99])})
        print(f"ood fit: layer {n}: {F.shape[1]} features, shrinkage {shrink:.4f}, "
              f"s = {sc:.6f}", flush=True)
    s_tr = score({n: np.concatenate([t["f"][n] for t in tr]) for n in layers}, st)
    s_val = score({n: np.concatenate([v["f"][n] for v in va]) for n in layers}, st)
    thr = float(np.float32(np.percentile(s_val, percentile)))
    argmax = layer_distances({n: np.concatenate([v["f"][n] for v in va]) for n in layers},
                             st).argmax(1)
    print(f"ood fit: {len(s_tr)} training plates, threshold {thr:.6f} ({percentile:g}th "
          f"percentile of {len(s_val)} validation plates), {time.time() - t0:.0f} s", flush=True)
    out.update({
        "threshold": np.float64(thr), "percentile": np.float64(percentile),
        "fit_splits": np.array(train_splits), "fit_rows_per_split": np.int64(per_split),
        "fit_cache_rows": np.array([t["n_cache"] for t in tr], np.int64),
        "threshold_splits": np.array(val_splits),
        "train_d_percentiles_50_99": np.percentile(s_tr, [50, 99]),
        "val_d": s_val.astype(np.float32),
        "val_d_percentiles_50_99": np.percentile(s_val, [50, 99]),
        "val_argmax_layer_counts": np.bincount(argmax, minlength=len(layers)),
        "weights_sha256": np.array(weights_sha256), "description": np.array(DESCRIPTION)})
    return out


def fit_pooled(model, train_splits: list[str], val_splits: list[str], size: int, psp: str,
               per_split: int = FIT_PER_SPLIT, percentile: float = PERCENTILE,
               weights_sha256: str = "unknown") -> dict:
    """1.3.1's statistics (KIND_POOLED), kept to reproduce that file."""
    t0 = time.time()
    tr = [split_features(model, s, size, psp, per_split) for s in train_splits]
    F = np.concatenate([t["f"] for t in tr])
    mu = F.mean(0)
    cov, shrink = ledoit_wolf(F)
    L = np.linalg.cholesky(cov)
    W = np.linalg.solve(L, np.eye(len(L)))        # L^-1, lower triangular
    W = np.tril(W)
    mu32, W32 = mu.astype(np.float32), W.astype(np.float32)
    d_train = distance(F, mu32, W32)
    va = [split_features(model, s, size, psp) for s in val_splits]
    d_val = np.concatenate([distance(v["f"], mu32, W32) for v in va])
    thr = float(np.float32(np.percentile(d_val, percentile)))
    ev = np.linalg.eigvalsh(cov)
    print(f"ood fit: {len(F)} training plates, shrinkage {shrink:.4f}, threshold {thr:.6f} "
          f"({percentile:g}th percentile of {len(d_val)} validation plates), "
          f"{time.time() - t0:.0f} s", flush=True)
    return {
        "kind": np.array(KIND_POOLED),
        "layer": FEATURE_LAYER, "mu": mu32, "W": W32, "threshold": np.float64(thr),
        "percentile": np.float64(percentile), "shrinkage": np.float64(shrink),
        "covariance_eig_min_max": np.array([ev.min(), ev.max()]),
        "fit_splits": np.array(train_splits), "fit_rows_per_split": np.int64(per_split),
        "fit_cache_rows": np.array([t["n_cache"] for t in tr], np.int64),
        "threshold_splits": np.array(val_splits),
        "train_d_percentiles_50_99": np.percentile(d_train, [50, 99]),
        "val_d": d_val.astype(np.float32),
        "val_d_percentiles_50_99": np.percentile(d_val, [50, 99]),
        "weights_sha256": np.array(weights_sha256), "description": np.array(DESCRIPTION_POOLED),
    }


def save(stats: dict, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **stats)
    tmp.replace(path)


def load(path: Path) -> dict:
    """The statistics file. KIND: also "layers" (list) and "mu", "W", "scale" as dicts by
    layer (what export.Explained takes). A file without "kind" is 1.3.1's (KIND_POOLED)."""
    with np.load(path) as z:
        s = {k: z[k] for k in z.files}
    s["kind"] = str(s.get("kind", KIND_POOLED))
    for k in ("weights_sha256", "description"):
        s[k] = str(s[k])
    for k in ("threshold", "percentile"):
        s[k] = float(s[k])
    if s["kind"] == KIND_POOLED:
        s["layer"] = str(s["layer"])
        s["shrinkage"] = float(s["shrinkage"])
    elif s["kind"] == KIND:
        s["layers"] = [str(n) for n in s["layers"]]
        s["mu"] = {n: s[f"mu_{n}"] for n in s["layers"]}
        s["W"] = {n: s[f"W_{n}"] for n in s["layers"]}
        s["scale"] = {n: float(s[f"scale_{n}"]) for n in s["layers"]}
    else:
        raise ValueError(f"{path}: unknown feature-distance kind {s['kind']!r}")
    return s


def graph_stats(stats: dict) -> dict:
    """The part of the statistics the exported graph needs (export.Explained's feature_stats)."""
    if stats.get("kind", KIND_POOLED) == KIND_POOLED:
        return {"layer": stats["layer"], "mu": stats["mu"], "W": stats["W"]}
    return {"kind": KIND, "layers": list(stats["layers"]), "mu": dict(stats["mu"]),
            "W": dict(stats["W"]), "scale": dict(stats["scale"])}


def summary(stats: dict) -> str:
    """One line for logs and reports."""
    if stats["kind"] == KIND_POOLED:
        return f"pooled `{stats['layer']}`, shrinkage {stats['shrinkage']:.5f}"
    return ("mean/std of " + ", ".join(
        f"`{n}` ({len(stats['mu'][n])}, s {stats['scale'][n]:.4f}, "
        f"shrinkage {float(stats['shrinkage_' + n]):.4f})" for n in stats["layers"]))


def fit_for_run(run: Path, out: Path, per_split: int = FIT_PER_SPLIT,
                percentile: float = PERCENTILE) -> dict:
    """Fit with a run's weights on the run's own training and validation splits; write `out`."""
    from plateqc_model.ship import load_model
    res = json.loads((Path(run) / "train_result.json").read_text())
    model = load_model(Path(run) / "weights.pt", res["width"])
    psp = res.get("psp", D.pp.PSP_V1)
    stats = fit(model, res["args"]["train"].split(","), res["args"]["val"].split(","),
                res["size"], psp, per_split, percentile,
                weights_sha256=sha256_file(Path(run) / "weights.pt"))
    save(stats, out)
    print("wrote", out, flush=True)
    return load(out)


# ---------------------------------------------------------------------------
# measurement (after the fit and the export are fixed)
# ---------------------------------------------------------------------------
def _run_onnx(model, x: np.ndarray, batch: int = 8) -> tuple[np.ndarray, np.ndarray]:
    P, Dd = [], []
    for i in range(0, len(x), batch):
        out = model.run(np.asarray(x[i:i + batch], np.float32), target=1)
        P.append(out["probabilities"][:, 1])
        Dd.append(out["feature_distance"])
    return np.concatenate(P), np.concatenate(Dd)


def _flag_rates(y, flagged) -> dict:
    y = y.astype(bool)
    return {"n": int(len(y)), "flagged": float(flagged.mean()),
            "n_usable": int((~y).sum()),
            "flagged_usable": float(flagged[~y].mean()) if (~y).any() else None,
            "n_unusable": int(y.sum()),
            "flagged_unusable": float(flagged[y].mean()) if y.any() else None}


def _timing(model_path: Path, plain_path: Path, x: np.ndarray, reps: int = 30) -> dict:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    sess = {k: ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
            for k, p in (("with", model_path), ("without", plain_path))}
    feed = {"image": x.astype(np.float32), "target_class": np.full(len(x), -1, np.int64)}
    for s in sess.values():
        for _ in range(3):
            s.run(None, feed)
    t = {k: [] for k in sess}
    for _ in range(reps):            # interleaved, so drifts in machine load hit both
        for k, s in sess.items():
            t0 = time.perf_counter()
            s.run(None, feed)
            t[k].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in t.items()}
    return {"batch": len(x), "repetitions": reps, "threads": 2,
            "median_seconds_with": med["with"], "median_seconds_without": med["without"],
            "min_seconds_with": float(min(t["with"])),
            "min_seconds_without": float(min(t["without"])),
            "relative_difference_median": med["with"] / med["without"] - 1}


def _only_feature_distance_nodes(proto) -> set[str]:
    """Names of the graph nodes that only the feature_distance output needs."""
    prod = {o: n for n in proto.graph.node for o in n.output}

    def ancestors(outs):
        seen, todo = set(), list(outs)
        while todo:
            n = prod.get(todo.pop())
            if n is None or n.name in seen:
                continue
            seen.add(n.name)
            todo.extend(n.input)
        return seen
    others = [o.name for o in proto.graph.output if o.name != "feature_distance"]
    return ancestors(["feature_distance"]) - ancestors(others)


def _profile(model_path: Path, x: np.ndarray, reps: int = 20) -> dict:
    """onnxruntime's own per-node kernel times: the share of the nodes only feature_distance
    needs (independent of the machine's load, unlike wall-clock times)."""
    import onnx
    import onnxruntime as ort
    proto = onnx.load(str(model_path))
    mine = _only_feature_distance_nodes(proto)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.enable_profiling = True
    so.profile_file_prefix = str(HERE / "work" / "ood-profile")
    # no graph rewriting, so the profiled nodes are the file's nodes
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    feed = {"image": x.astype(np.float32), "target_class": np.full(len(x), -1, np.int64)}
    for _ in range(reps):
        sess.run(None, feed)
    trace = json.loads(Path(sess.end_profiling()).read_text())
    tot = fd = 0
    for e in trace:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            tot += e["dur"]
            if e["name"][:-len("_kernel_time")] in mine:
                fd += e["dur"]
    return {"feature_distance_nodes": sorted(mine), "runs": reps,
            "kernel_us_per_run_all": tot / reps, "kernel_us_per_run_feature_distance": fd / reps,
            "share": fd / tot if tot else None}


def export_plain(model_path: Path, run: Path, out: Path) -> Path:
    """The same weights exported without feature_distance (for the timing comparison)."""
    import onnx
    from plateqc_model import export as E
    from plateqc_model.ship import load_model
    from plateqc_model.net import PlateNet
    res = json.loads((Path(run) / "train_result.json").read_text())
    model = load_model(Path(run) / "weights.pt", res["width"])
    md = {p.key: p.value for p in onnx.load(str(model_path)).metadata_props}
    md = {k: v for k, v in md.items() if "feature_distance" not in k}
    E.export_onnx(model, list(PlateNet.LAYERS), out, input_size=res["size"], metadata=md)
    return out


def measure(model_path: Path, stats_path: Path, run: Path, gate_count: int = 1000,
            time_reps: int = 100) -> dict:
    from plateqc_model import evaluate as EV
    from plateqc_model import gate as G
    m = EV.Model(model_path)
    if "feature_distance" not in m.names:
        raise SystemExit(f"{model_path} has no feature_distance output")
    thr = float(m.md["plateqc.feature_distance_threshold"])
    stats = load(stats_path)
    res = {"model": str(model_path), "model_version": m.md.get("plateqc.model_version"),
           "feature_distance_threshold": thr, "threshold": m.threshold,
           "fixed_before_measuring": {
               "kind": stats["kind"],
               "features": (f"pooled `{stats['layer']}` (global max + mean), eval mode"
                            if stats["kind"] == KIND_POOLED else
                            "per-channel spatial mean and std of " + ", ".join(
                                f"`{n}`" for n in stats["layers"]) + "; score max_l d_l / s_l, "
                            "s_l = per-layer p" + f"{stats['percentile']:g} on "
                            + "+".join(map(str, stats["threshold_splits"]))),
               "fit": f"{int(stats['fit_rows_per_split'])} evenly spaced rows of each of "
                      f"{list(map(str, stats['fit_splits']))} (twins included)",
               "covariance": "Ledoit-Wolf (intensity from the data): " + summary(stats),
               "threshold": f"{stats['percentile']:g}th percentile of d over "
                            f"{'+'.join(map(str, stats['threshold_splits']))}",
               "stats_file": str(stats_path), "stats_sha256": sha256_file(stats_path)},
           "splits": {}}
    splits = {"val4": None, "valc5": None, "test4": None, "shifted4": None, "famb": None}
    for name in splits:
        t0 = time.time()
        if name == "famb":
            d = G.build_gate_split(gate_count, m.size, psp=m.psp)   # as gate.py: seed 9
        else:
            d = D.load_split(name, m.size, psp=m.psp)
        p, dist = _run_onnx(m, d["x"])
        y = d["y"].astype(np.int64)
        flagged = dist >= thr
        r = {"flag_rates": _flag_rates(y, flagged),
             "distance_percentiles_50_90_99": [float(v) for v in
                                               np.percentile(dist, [50, 90, 99])]}
        if flagged.any():
            r["flagged_called_unusable"] = float((p[flagged] >= m.threshold).mean())
            r["flagged_types"] = {t: int(d["types"][flagged, k].sum())
                                  for k, t in enumerate(m.types) if d["types"][flagged, k].any()}
        if name in ("test4", "famb"):
            r["all"] = EV.operating_points(y, p, m.threshold)
            r["not_flagged"] = EV.operating_points(y[~flagged], p[~flagged], m.threshold)
            r["flagged"] = (EV.operating_points(y[flagged], p[flagged], m.threshold)
                            if flagged.sum() >= 2 and 0 < y[flagged].sum() < flagged.sum()
                            else {"n": int(flagged.sum()),
                                  "n_unusable": int(y[flagged].sum())})
        r["_d"], r["_y"] = dist, y
        res["splits"][name] = r
        print(name, json.dumps(r["flag_rates"]), f"{time.time() - t0:.0f} s", flush=True)
    # the development foreign set of plan-1.3.md round 2 (no family B in it)
    from plateqc_model.ood_round2 import foreign_set
    fs = foreign_set(size=m.size)   # the same design at the model's input size
    p, dist = _run_onnx(m, fs["x"])
    flagged = dist >= thr
    called_usable = p < m.threshold
    groups = list(dict.fromkeys(fs["group"].tolist()))
    res["foreign_dev"] = {
        "n": int(len(dist)), "flagged_pooled": float(flagged.mean()),
        "flagged_group_mean": float(np.mean([flagged[fs["group"] == g].mean() for g in groups])),
        "n_called_usable": int(called_usable.sum()),
        "flagged_called_usable": (float(flagged[called_usable].mean())
                                  if called_usable.any() else None),
        "groups": {g: {"n": int((fs["group"] == g).sum()),
                       "flagged": float(flagged[fs["group"] == g].mean()),
                       "called_usable": int(called_usable[fs["group"] == g].sum())}
                   for g in groups},
        "images": {str(n): {"group": str(g), "feature_distance": float(d),
                            "p_unusable": float(q)}
                   for n, g, d, q in zip(fs["name"], fs["group"], dist, p)
                   if g in ("pydicom_mono", "pydicom_us_grey")}}
    print("foreign_dev", json.dumps({k: v for k, v in res["foreign_dev"].items()
                                     if k not in ("groups", "images")}), flush=True)
    dd = {s: (v.pop("_d"), v.pop("_y")) for s, v in res["splits"].items()}
    # how well the distance alone separates another set from held-out family A (measured only)
    from plateqc_model.train import roc_auc
    res["separation_auc_vs_test4"] = {}
    for s in ("shifted4", "famb"):
        (da, ya), (db, yb) = dd["test4"], dd[s]
        lab = np.r_[np.zeros(len(da)), np.ones(len(db))].astype(bool)
        sc = np.r_[da, db]
        res["separation_auc_vs_test4"][s] = {
            "all": roc_auc(lab, sc),
            "usable": roc_auc(np.r_[np.zeros((ya == 0).sum()), np.ones((yb == 0).sum())]
                              .astype(bool), np.r_[da[ya == 0], db[yb == 0]]),
            "unusable": roc_auc(np.r_[np.zeros((ya == 1).sum()), np.ones((yb == 1).sum())]
                                .astype(bool), np.r_[da[ya == 1], db[yb == 1]])}
    # the fit's own validation distances (PyTorch float32 features, numpy float64) vs the file's
    dv = np.concatenate([dd[s][0] for s in ("val4", "valc5")])
    fitd = stats["val_d"].astype(np.float64)
    if len(fitd) == len(dv):
        res["onnx_vs_fit_validation_distance_max_rel"] = float(np.max(np.abs(dv - fitd) / fitd))
    # cost: the same weights exported without the output, batch of 8, onnxruntime
    plain = HERE / "work" / "plateqc-no-feature-distance.onnx"
    export_plain(model_path, run, plain)
    x8 = D.load_split("test4", m.size, 8, psp=m.psp)["x"]
    res["timing_batch8"] = _timing(Path(model_path), plain, x8, time_reps)
    print("timing", json.dumps(res["timing_batch8"]), flush=True)
    res["profile_batch8"] = _profile(Path(model_path), x8)
    print("profile", json.dumps({k: v for k, v in res["profile_batch8"].items()
                                 if k != "feature_distance_nodes"}), flush=True)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit")
    f.add_argument("--run", default=str(HERE / "runs" / "cand-M"))
    f.add_argument("--out", default=str(HERE / "plateqc_ood.npz"))
    f.add_argument("--per-split", type=int, default=FIT_PER_SPLIT)
    f.add_argument("--percentile", type=float, default=PERCENTILE)
    me = sub.add_parser("measure")
    me.add_argument("--model", default=str(HERE / "plateqc.onnx"))
    me.add_argument("--stats", default=str(HERE / "plateqc_ood.npz"))
    me.add_argument("--run", default=str(HERE / "runs" / "cand-M"))
    me.add_argument("--gate-count", type=int, default=1000)
    me.add_argument("--out", default=str(HERE / "work" / "ood.json"))
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    if a.cmd == "fit":
        fit_for_run(Path(a.run), Path(a.out), a.per_split, a.percentile)
    else:
        res = measure(Path(a.model), Path(a.stats), Path(a.run), a.gate_count)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
        print("wrote", a.out)


if __name__ == "__main__":
    sys.exit(main())
