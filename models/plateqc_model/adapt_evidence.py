"""Evidence for site adaptation on the out-of-family generator (family B), through plateqc.

    make -C models adapt-evidence        # = python -m plateqc_model.adapt_evidence

One family-B DICOM set (`famb.make_set --seed 11`, COUNT plates; the gate's plates are
`famb.make_plate(9_000_000 + i)` and its scan set is make_set seed 10, so none of these is
one of them) is judged once by `plateqc scan` with the shipped model (`[infer] review_margin =
0.0`: no near-threshold hold). The plates come in the set's fixed order; the first POOL (200)
are the ones a site could have reviewed, the rest are the evaluation plates, the same for
every N. For each N in REVIEWED (50, 100, 200):

1. a copy of the scan database gets the first N plates' true labels as reviews
   (`plateqc review-import`, verdict = the set's label);
2. `plateqc calibrate --target-false-reject 0.05` there: the calibrated threshold (b);
3. `plateqc export-labels` there, then `make adapt LABELS=... OUT=.../adapted.onnx` (the recipe
   of plateqc_model/adapt.py, fixed before this was run);
4. the whole set judged again by `plateqc scan` with the adapted model (its own threshold,
   (c)); the same N reviews imported there and calibrated: (d).

On the evaluation plates: AUC and specificity at recall 0.95 of the shipped and the adapted
model, sensitivity / specificity at (a) the shipped threshold, (b) the calibrated one, (c) the
adapted model's own, (d) the adapted model's calibrated one; and from `adapt` the in-family
AUC change on its held-out family-A check plates. Writes --out (JSON) and a markdown table
(--table). `--family a-shifted` runs the same chain on shifted family-A plates
(`synth.make_set --shifted`), a dry run for the machinery that does not look at family B.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]   # models/

from plateqc_model.evaluate import operating_points


def run(cmd, **kw):
    print("+ " + " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def make_set(family: str, out: Path, count: int, seed: int) -> list[dict]:
    """The set's plates in their fixed order: [{"file", "y"}] (y = 1: unusable)."""
    py = sys.executable
    if family == "famb":
        if not (out / "labels.csv").exists():
            run([py, "-m", "famb.make_set", "--out", out, "--count", count, "--seed", seed],
                cwd=HERE)
        with open(out / "labels.csv", newline="") as fh:
            return [{"file": r["file"], "y": 1 - int(r["usable"])} for r in csv.DictReader(fh)]
    if family == "a-shifted":
        if not (out / "labels.jsonl").exists():
            run([py, "-m", "synth.make_set", "--out", out, "--count", count, "--seed", seed,
                 "--shifted"], cwd=HERE)
        rows = [json.loads(l) for l in open(out / "labels.jsonl")]
        return [{"file": r["file"], "y": int(not r["usable"])} for r in rows]
    raise SystemExit(f"unknown family {family}")


def config(path: Path, model: Path, site: str):
    path.write_text(f'[paths]\nmodel = "{model.resolve()}"\n\n[record]\nsite = "{site}"\n\n'
                    '[infer]\nreview_margin = 0.0\n\n[explain]\nwrite_overlays = false\n')


def scan(binary: Path, dicom: Path, cfg: Path, db: Path, out: Path):
    run([binary, "scan", dicom, "--config", cfg, "--db", db, "--out", out,
         "--no-fail-on-error"], stdout=subprocess.DEVNULL)


def scores(db: Path) -> dict:
    """file name -> (sop uid, verdict, score, model version) of its latest judgement."""
    con = sqlite3.connect(db)
    res = {}
    for src, uid, verdict, score, ver in con.execute(
            "SELECT source_path, sop_instance_uid, verdict, unusable_score, model_version "
            "FROM plate_verdicts ORDER BY rowid"):
        res[Path(src).name] = {"uid": uid, "verdict": verdict, "score": score, "version": ver}
    con.close()
    return res


def copy_db(src: Path, dst: Path):
    dst.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", ".key"):
        s = Path(str(src) + suffix)
        if s.exists():
            shutil.copyfile(s, str(dst) + suffix)


def import_reviews(binary: Path, cfg: Path, db: Path, plates: list[dict], judged: dict,
                   path: Path):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["sop_instance_uid", "verdict", "by", "reason"])
        for p in plates:
            w.writerow([judged[p["file"]]["uid"], "unusable" if p["y"] else "usable",
                        "adapt-evidence", "true label of the synthetic set"])
    run([binary, "review-import", path, "--config", cfg, "--db", db], stdout=subprocess.DEVNULL)


def calibrate(binary: Path, cfg: Path, db: Path, target: float) -> float | None:
    r = subprocess.run([str(binary), "calibrate", "--by", "adapt-evidence",
                        "--target-false-reject", str(target), "--config", str(cfg), "--db",
                        str(db)], capture_output=True, text=True)
    print(r.stdout + r.stderr, flush=True)
    if r.returncode != 0:
        return None
    con = sqlite3.connect(db)
    row = con.execute("SELECT threshold FROM calibrations ORDER BY rowid DESC LIMIT 1").fetchone()
    con.close()
    return float(row[0]) if row else None


def at(y: np.ndarray, p: np.ndarray, thr: float | None) -> dict | None:
    if thr is None:
        return None
    y = y.astype(bool)
    return {"threshold": thr, "sensitivity": float((p[y] >= thr).mean()),
            "specificity": float((p[~y] < thr).mean())}


def evaluate(plates: list[dict], judged: dict) -> tuple[np.ndarray, np.ndarray, int]:
    ys, ps, errors = [], [], 0
    for pl in plates:
        j = judged.get(pl["file"])
        if j is None or j["score"] is None or j["verdict"] == "error":
            errors += 1
            continue
        ys.append(pl["y"])
        ps.append(float(j["score"]))
    return np.array(ys), np.array(ps), errors


def fmt(v, nd=3):
    return "-" if v is None else f"{v:.{nd}f}"


def table(res: dict) -> str:
    ev = res["evaluation"]
    sh = res["shipped"]
    lines = [
        f"Evaluation plates: {ev['plates']} ({ev['unusable']} unusable), plates "
        f"{res['pool']}-{res['count'] - 1} of the set; scan errors {ev['errors']}.",
        "",
        "| reviewed N | model | AUC | spec @ recall 0.95 | (a) shipped thr: sens / spec "
        "| (b) calibrated thr: sens / spec | (c) adapted own thr: sens / spec "
        "| (d) adapted calibrated: sens / spec | in-family AUC change |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| 0 | shipped {res['shipped_version']} | {fmt(sh['auc'])} | "
        f"{fmt(sh['spec_at_recall_0.95'])} | {fmt(sh['sensitivity'])} / "
        f"{fmt(sh['specificity'])} (thr {sh['threshold']:.4f}) | - | - | - | - |",
    ]
    for r in res["runs"]:
        b = r.get("calibrated")
        bs = f"{fmt(b['sensitivity'])} / {fmt(b['specificity'])} (thr {b['threshold']:.4f})" \
            if b else "refused"
        lines.append(f"| {r['n']} | shipped + calibration | {fmt(sh['auc'])} | "
                     f"{fmt(sh['spec_at_recall_0.95'])} | - | {bs} | - | - | - |")
        if r.get("adapt_refused"):
            lines.append(f"| {r['n']} | adapted: REFUSED ({r['adapt_refused']}) | - | - | - | - "
                         f"| - | - | {r.get('in_family_auc_change', 0):+.4f} |")
            continue
        a = r["adapted"]
        c, d = r["adapted_own"], r.get("adapted_calibrated")
        ds = f"{fmt(d['sensitivity'])} / {fmt(d['specificity'])} (thr {d['threshold']:.4f})" \
            if d else "refused"
        ch = r.get("change_vs_shipped")
        da = (f" ({ch['auc_change']:+.3f}, CI {ch['auc_change_ci95'][0]:+.3f} to "
              f"{ch['auc_change_ci95'][1]:+.3f})") if ch else ""
        dsp = (f" ({ch['spec_at_recall_0.95_change']:+.3f}, CI "
               f"{ch['spec_at_recall_0.95_change_ci95'][0]:+.3f} to "
               f"{ch['spec_at_recall_0.95_change_ci95'][1]:+.3f})") if ch else ""
        lines.append(
            f"| {r['n']} | adapted `{r['variant']}` ({r['model_version']}) | {fmt(a['auc'])}{da} | "
            f"{fmt(a['spec_at_recall_0.95'])}{dsp} | - | - | {fmt(c['sensitivity'])} / "
            f"{fmt(c['specificity'])} (thr {c['threshold']:.4f}) | {ds} | "
            f"{r['in_family_auc_change']:+.4f} ({r['in_family_shipped']:.4f} -> "
            f"{r['in_family_adapted']:.4f}) |")
    return "\n".join(lines) + "\n"


def latest_calibration(db: Path) -> float | None:
    con = sqlite3.connect(db)
    try:
        row = con.execute("SELECT threshold FROM calibrations ORDER BY rowid DESC LIMIT 1"
                          ).fetchone()
    except sqlite3.OperationalError:
        row = None
    con.close()
    return float(row[0]) if row else None


def spec_at_recall(y: np.ndarray, p: np.ndarray) -> float:
    """Specificity at recall 0.95 (evaluate.operating_points' definition)."""
    return operating_points(y, p, 0.5)["spec_at_recall_0.95"]


def paired_bootstrap(y: np.ndarray, p0: np.ndarray, p1: np.ndarray, reps: int = 2000,
                     seed: int = 0) -> dict:
    """95 % percentile intervals of the change (p1 - p0) in AUC and in specificity at recall
    0.95, resampling the evaluation plates (paired: the same plates for both models)."""
    from plateqc_model.train import roc_auc
    rng = np.random.default_rng(seed)
    da, ds = [], []
    n = len(y)
    for _ in range(reps):
        j = rng.integers(0, n, n)
        if y[j].all() or not y[j].any():
            continue
        da.append(roc_auc(y[j], p1[j]) - roc_auc(y[j], p0[j]))
        ds.append(spec_at_recall(y[j], p1[j]) - spec_at_recall(y[j], p0[j]))
    q = lambda v: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]  # noqa: E731
    return {"reps": len(da), "seed": seed,
            "auc_change": float(roc_auc(y, p1) - roc_auc(y, p0)), "auc_change_ci95": q(da),
            "spec_at_recall_0.95_change": float(spec_at_recall(y, p1) - spec_at_recall(y, p0)),
            "spec_at_recall_0.95_change_ci95": q(ds)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="famb", choices=["famb", "a-shifted"])
    ap.add_argument("--count", type=int, default=600)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--pool", type=int, default=200)
    ap.add_argument("--reviewed", default="50,100,200")
    ap.add_argument("--target-false-reject", type=float, default=0.05)
    ap.add_argument("--model", default=str(HERE / "plateqc.onnx"))
    ap.add_argument("--bin", default=str(HERE.parent / "target" / "release" / "plateqc"))
    ap.add_argument("--work", default=str(HERE / "work" / "adapt-evidence"))
    ap.add_argument("--out", default=str(HERE / "results" / "adapt-evidence.json"))
    ap.add_argument("--table", default=None, help="markdown table (default: WORK/table.md)")
    ap.add_argument("--reuse", action="store_true",
                    help="recompute the figures from the scans, calibrations and adapted models "
                         "already in --work (nothing is scanned, calibrated or adapted again)")
    a = ap.parse_args(argv)
    t_start = time.time()
    binary = Path(a.bin).resolve()
    work = Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ns = [int(n) for n in a.reviewed.split(",")]
    if max(ns) > a.pool or a.pool >= a.count:
        raise SystemExit("need max(N) <= pool < count")
    dicom = work / f"{a.family}-{a.seed}-{a.count}"
    plates = make_set(a.family, dicom, a.count, a.seed)
    pool, rest = plates[:a.pool], plates[a.pool:]

    base = work / "shipped"
    cfg = base / "plateqc.toml"
    state = work / "state.json"
    st = json.loads(state.read_text()) if a.reuse and state.exists() else {}
    if not a.reuse:
        if base.exists():
            shutil.rmtree(base)
        base.mkdir()
        config(cfg, Path(a.model), "evidence-site")
        t0 = time.time()
        scan(binary, dicom, cfg, base / "db.sqlite", base / "out")
        st["scan_seconds"] = time.time() - t0
    judged = scores(base / "db.sqlite")
    shipped_version = next(iter(judged.values()))["version"]
    import onnx
    md = {p.key: p.value for p in onnx.load(a.model).metadata_props}
    shipped_thr = float(md["plateqc.threshold"])
    y, p, errors = evaluate(rest, judged)
    res = {"family": a.family, "set": f"{a.family} make_set --seed {a.seed} --count {a.count}",
           "count": a.count, "seed": a.seed, "pool": a.pool, "reviewed": ns,
           "target_false_reject": a.target_false_reject, "shipped_version": shipped_version,
           "evaluation": {"plates": int(len(y)), "unusable": int(y.sum()), "errors": errors},
           "pool_errors": evaluate(pool, judged)[2],
           "shipped": operating_points(y, p, shipped_thr),
           "scan_seconds": st.get("scan_seconds"), "runs": []}
    scores_out = {"y": y.astype(int).tolist(), "shipped": [round(float(v), 6) for v in p]}
    print(json.dumps(res["shipped"]), flush=True)

    for n in ns:
        d = work / f"n{n}"
        r = {"n": n, "reviewed_unusable": int(sum(pl["y"] for pl in pool[:n]))}
        reviewed = [pl for pl in pool[:n] if pl["file"] in judged
                    and judged[pl["file"]]["verdict"] != "error"]
        db = d / "db.sqlite"
        out = d / "adapted.onnx"
        if not a.reuse:
            if d.exists():
                shutil.rmtree(d)
            d.mkdir()
            copy_db(base / "db.sqlite", db)
            import_reviews(binary, cfg, db, reviewed, judged, d / "reviews.csv")
            calibrate(binary, cfg, db, a.target_false_reject)
            run([binary, "export-labels", d / "labels", "--config", cfg, "--db", db],
                stdout=subprocess.DEVNULL)
            t0 = time.time()
            ad = subprocess.run(["make", "-C", str(HERE), "adapt", f"LABELS={d / 'labels'}",
                                 f"OUT={out}"])
            st[f"n{n}"] = {"adapt_seconds": time.time() - t0, "adapt_exit": ad.returncode}
        code = st.get(f"n{n}", {}).get("adapt_exit", 0 if out.exists() else 1)
        r["adapt_seconds"] = st.get(f"n{n}", {}).get("adapt_seconds")
        r["calibrated"] = at(y, p, latest_calibration(db))
        rj = out.with_suffix(".json") if code == 0 else out.with_name(out.stem + ".refused.json")
        info = json.loads(rj.read_text()) if rj.exists() else {}
        if info:
            r.update(model_version=info["model_version"], variant=info["chosen"],
                     variant_step=info["chosen_step"], chosen_why=info["chosen_why"],
                     variants=[{k: v[k] for k in ("variant", "step", "heldout_auc",
                                                  "heldout_log_loss", "check_auc")}
                               for v in info["variants"]],
                     heldout=info["heldout"], labels_used=info["labels"]["used"],
                     in_family_shipped=info["in_family"]["shipped"]["auc"],
                     in_family_adapted=info["in_family"]["adapted"]["auc"],
                     in_family_auc_change=info["in_family"]["auc_change"])
        if code != 0:
            r["adapt_refused"] = info.get("refused") or f"make adapt exit {code}"
            res["runs"].append(r)
            continue
        acfg = d / "adapted.toml"
        adb = d / "adapted.sqlite"
        if not a.reuse:
            config(acfg, out, "evidence-site")
            scan(binary, dicom, acfg, adb, d / "out")
        aj = scores(adb)
        ya, pa, aerr = evaluate(rest, aj)
        assert np.array_equal(ya, y), "the adapted scan judged other plates"
        r["adapted"] = operating_points(ya, pa, info["threshold"])
        r["adapted_own"] = at(ya, pa, info["threshold"])
        r["adapted_errors"] = aerr
        if not a.reuse:
            import_reviews(binary, acfg, adb, [pl for pl in reviewed if pl["file"] in aj], aj,
                           d / "reviews-adapted.csv")
            calibrate(binary, acfg, adb, a.target_false_reject)
        r["adapted_calibrated"] = at(ya, pa, latest_calibration(adb))
        r["change_vs_shipped"] = paired_bootstrap(y, p, pa)
        scores_out[f"adapted_n{n}"] = [round(float(v), 6) for v in pa]
        res["runs"].append(r)
        print(json.dumps({k: v for k, v in r.items() if k not in ("variants", "heldout")}),
              flush=True)

    state.write_text(json.dumps(st, indent=1) + "\n")
    res["eval_scores"] = scores_out
    res["seconds"] = time.time() - t_start
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    tab = Path(a.table) if a.table else work / "table.md"
    tab.write_text(table(res))
    print(table(res))
    print(f"wrote {a.out} and {tab} ({res['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
