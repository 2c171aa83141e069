"""Write models/CARD.md (model card) from the training result and work/eval.json.

    python -m plateqc_model.card --run models/work/run --eval models/work/eval.json --out models/CARD.md
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]   # models/


def f3(v):
    return "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


# The training splits the Makefile builds, by name (seed bases as in `plateqc_model.data`).
SPLITS = {
    "train": "family A (`models/synth`, seeds 1_000_000 + i)",
    "train4": "family A v3 (`models/synth` with domain randomisation, seeds 1_000_000 + i, "
              "each plate with artifacts followed by its artifact-free twin)",
    "trainc5": "family C (`models/famc`, a second anatomy, texture and processing design, "
               "each plate with artifacts followed by its artifact-free twin)",
    "traind7": "family D (`models/famd`, a third, outline-based design, each plate with "
               "artifacts followed by its artifact-free twin)",
    "traine10": "family E (`models/fame`, families A, C and D with their anatomy drawn "
                "widely, one of the three per scene, each plate with artifacts followed by its "
                "artifact-free twin)",
    "trainf13": "family F (`models/famf`, a 3-D jaw segment projected by a diverging point "
                "source, each plate with artifacts followed by its artifact-free twin)",
}


def lineage(tr, base: Path = HERE, limit: int = 10) -> list[str]:
    """Where a run's starting weights came from: one line per earlier run it continued (its
    `--init`, followed back through those runs' own results), so a card of a continued run
    does not pass for the whole training. Paths in `--init` are relative to models/."""
    out, seen = [], set()
    init = tr["args"].get("init")
    while init and len(out) < limit and init not in seen:
        seen.add(init)
        f = base / init / "train_result.json"
        if not f.exists():
            out.append(f"- started from the weights of `{init}` (its record is not in this "
                       "checkout)")
            break
        prev = json.loads(f.read_text())
        pa = prev["args"]
        out.append(f"- started from the weights of `{init}`: {prev['epochs_run']} epochs over "
                   f"`{pa['train']}`, peak lr {pa['lr']:g}, seed {prev['seed']}"
                   + (f", style randomisation p = {pa['style_aug']:g}"
                      if pa.get("style_aug") else ""))
        init = pa.get("init")
    if out and not init:
        out.append("- the first of these started from random weights")
    return out


def train_data(tr):
    """What the run was trained on: its splits, in the order given to train.py."""
    names = tr["args"]["train"].split(",")
    parts = [SPLITS.get(n, f"split `{n}`") for n in names]
    return (f"{tr['train_plates']} synthetic plates over {len(names)} rendering "
            f"famil{'y' if len(names) == 1 else 'ies'}: " + "; ".join(
                f"`{n}` = {p}" for n, p in zip(names, parts))
            + " (50 % unusable, 60 % with artifacts)")


def target_rows(ev):
    rows = []
    h = ev.get("heldout", {})
    c = h.get("classification", {})
    e = h.get("explanations", {}).get("per_layer", {})
    auc = c.get("auc")
    rows.append(("held-out ROC AUC >= 0.98", f3(auc), auc is not None and auc >= 0.98))
    r = c.get("recall_at_spec_0.90")
    rows.append(("held-out unusable recall >= 0.95 at specificity >= 0.90 (best operating point)",
                 f3(r), r is not None and r >= 0.95))
    s, sp = c.get("sensitivity"), c.get("specificity")
    rows.append(("same at the shipped threshold", f"sens {f3(s)}, spec {f3(sp)}",
                 s is not None and s >= 0.95 and sp >= 0.90))
    last = list(e)[-1] if e else None
    pg = e[last].get("gradcam_hit") if last else None
    rows.append((f"last-layer (`{last}`) Grad-CAM pointing game >= 0.8", f3(pg),
                 pg is not None and pg >= 0.8))
    return rows


def gate_target_rows(g):
    """The out-of-family targets (issue: judged on family B, never trained or chosen on)."""
    c = g.get("classification", {})
    e = g.get("explanations", {}).get("per_layer", {})
    last = list(e)[-1] if e else None
    auc, s, sp = c.get("auc"), c.get("sensitivity"), c.get("specificity")
    pg = e[last].get("gradcam_hit") if last else None
    de = g.get("deletion", {})
    ga, ra = de.get("gradcam_area"), de.get("random_area")
    fp = {k: v for k, v in g.get("clean_false_positive_rate", {}).items() if k != "plates"}
    worst = max(fp.items(), key=lambda kv: kv[1]) if fp else (None, None)
    return [
        ("family B ROC AUC >= 0.97", f3(auc), auc is not None and auc >= 0.97),
        ("family B unusable recall >= 0.95 and specificity >= 0.90 at the shipped threshold",
         f"sens {f3(s)}, spec {f3(sp)}", s is not None and s >= 0.95 and sp >= 0.90),
        (f"family B last-layer (`{last}`) Grad-CAM pointing game >= 0.80", f3(pg),
         pg is not None and pg >= 0.80),
        ("family B deletion curve (Grad-CAM order) falls faster than random deletion "
         "(area under P(unusable), lower is faster)", f"{f3(ga)} vs random {f3(ra)}",
         ga is not None and ra is not None and ga < ra),
        ("family B per-type false-reason rate on clean plates <= 5 % (worst type)",
         f"{worst[0]} {f3(worst[1])}", worst[1] is not None and worst[1] <= 0.05),
    ]


def cls_table(ev):
    out = ["| set | plates | unusable | ROC AUC | sensitivity @thr | specificity @thr | "
           "recall @spec 0.90 | spec @recall 0.95 |", "|---|---|---|---|---|---|---|---|"]
    for key, label in (("heldout", "held-out (seed 3)"), ("shifted", "shifted (seed 4, Plate path)"),
                       ("shifted_dicom", "shifted, DICOM files via pydicom")):
        c = ev.get(key, {}).get("classification")
        if not c:
            continue
        out.append(f"| {label} | {c['n']} | {c['n_unusable']} | {f3(c['auc'])} | "
                   f"{f3(c['sensitivity'])} | {f3(c['specificity'])} | "
                   f"{f3(c['recall_at_spec_0.90'])} | {f3(c['spec_at_recall_0.95'])} |")
    return out


def type_table(r):
    out = ["| type | plates | type recall | sev 1 | sev 2 | sev 3 | false-pos rate | "
           "unusable plates | their unusable recall |", "|---|---|---|---|---|---|---|---|---|"]
    for name, t in r["per_type"].items():
        out.append(f"| {name} | {t['n']} | {f3(t['type_recall'])} | {f3(t['type_recall_sev1'])} | "
                   f"{f3(t['type_recall_sev2'])} | {f3(t['type_recall_sev3'])} | "
                   f"{f3(t['type_false_pos_rate'])} | {t['n_unusable']} | "
                   f"{f3(t['unusable_recall'])} |")
    return out


def sev_table(r):
    out = ["| max severity on plate | plates | unusable | unusable recall | usable specificity |",
           "|---|---|---|---|---|"]
    for s, t in r["per_max_severity"].items():
        out.append(f"| {s} | {t['n']} | {t['n_unusable']} | {f3(t['unusable_recall'])} | "
                   f"{f3(t['usable_specificity'])} |")
    return out


def expl_table(r):
    e = r["explanations"]
    out = [f"{e['plates']} truly unusable plates whose artifacts are all local; masks dilated by "
           f"{e['dilate_px']} px in the {256}-px frame; a uniform map would score energy share "
           f"{f3(e['mask_area_share_baseline'])} (the masks' share of the plate).", "",
           "| layer | Grad-CAM pointing | Grad-CAM energy in mask | Grad-CAM peak at plate edge | "
           "Grad-CAM all-zero | LayerCAM pointing | LayerCAM energy in mask |",
           "|---|---|---|---|---|---|---|"]
    for l, v in e["per_layer"].items():
        out.append(f"| `{l}` | {f3(v.get('gradcam_hit'))} | {f3(v.get('gradcam_energy'))} | "
                   f"{f3(v.get('gradcam_peak_edge'))} | {f3(v.get('gradcam_zero'))} | "
                   f"{f3(v.get('layercam_hit'))} | {f3(v.get('layercam_energy'))} |")
    return out


# what the card says about each head of net.py
HEAD_TEXT = {
    "pooled": "global max + mean pooling, linear heads for 2 class logits and 14 artifact-type "
              "logits",
    "maps": "a 1x1 convolution to 14 artifact-type maps at `last` (trained against the artifact "
            "masks), each type's logit from its map's max and mean, the 2 class logits linear "
            "in those 28 pooled map values only (plan-1.3.md round 15)",
}


def head_text(train_result: dict) -> str:
    """The card's words for the head a run trained (train.py records `--head` in its args;
    runs from before the option had the pooled head)."""
    return HEAD_TEXT[train_result.get("args", {}).get("head", "pooled")]


def backbone_text(train_result: dict) -> str:
    """The card's words for the backbone a run trained: PlateNet's seven convolutions, plus the
    residual blocks `--extra-blocks` appends to `middle` and `last` (plan-1.3.md round 18)."""
    w, S = train_result["width"], train_result["size"]
    n = train_result.get("args", {}).get("extra_blocks", 0)
    convs = 7 + 2 * n
    text = (f"PlateNet (width {w}): {convs} conv3x3-BN-ReLU layers with four stride-2 steps "
            f"(early {2 * w}x{S // 4}x{S // 4}, middle {4 * w}x{S // 8}x{S // 8}, "
            f"last {8 * w}x{S // 16}x{S // 16}, the second conv of `last` dilated by 2)")
    if n:
        text += (f", of which {2 * n} in {n} residual block{'s' if n > 1 else ''} at the end of "
                 "each of `middle` and `last` (plan-1.3.md round 18)")
    return text


def fallback_sentence(choice: dict) -> str:
    """How the fallback took the chosen run, in the terms it was met: beating the model shipped
    before on both family-A measures, or only staying within the plan's tolerances of it."""
    chosen = next(r for r in choice["candidates"] if r["run"] == choice["chosen"])
    base = choice.get("baseline")
    head = ("By the fallback written in the plan before round 2 trained, the run with the "
            "highest validation AUC was taken because ")
    tail = ", and shipped only after the family-B gate found it better than that model."
    if base is None:
        return head + "no model was shipped before it" + tail
    key_auc = "fallback_val_auc" if "fallback_val_auc" in chosen else "val_auc"
    measures = (("validation AUC", key_auc),
                ("shifted specificity at recall 0.95", "shifted_spec_at_recall_0.95"))
    worse = [f"{name} ({f3(chosen[k])} vs {f3(base[k])})" for name, k in measures
             if chosen[k] < base[k]]
    if not worse:
        return head + "it beats the model shipped before on both family-A measures" + tail
    return (head + "on family A it is no worse than the model shipped before by more than the "
            "plan's tolerances (" + choice["rule"]["fallback"] + "); it is below it on "
            + " and ".join(worse) + tail)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=str(HERE / "work" / "run"))
    ap.add_argument("--eval", default=str(HERE / "work" / "eval.json"))
    ap.add_argument("--gate", default=None, help="gate.py result (family B)")
    ap.add_argument("--choice", default=None, help="choose.py result")
    ap.add_argument("--out", default=str(HERE / "CARD.md"))
    ap.add_argument("--notes", default=str(HERE / "card_notes.md"),
                    help="hand-written observations appended verbatim if the file exists")
    a = ap.parse_args(argv)
    tr = json.loads((Path(a.run) / "train_result.json").read_text())
    ev = json.loads(Path(a.eval).read_text())
    md = ev["metadata"]
    run = Path(a.run).resolve()
    run_rel = (f"models/{run.relative_to(HERE)}" if run.is_relative_to(HERE) else str(run))
    L = []
    L += ["# Model card: plateqc-psp-cnn", "",
          f"Generated by `models/card.py` from `{run_rel}/train_result.json` and "
          "`models/work/eval.json` (`make -C models model`). All figures are measured on "
          "**synthetic** plates from the generators in `models/` (rendering families A "
          "`synth`, C `famc`, D `famd`, E `fame` and F `famf`, and B `famb`, which is never "
          "trained or "
          "chosen on); nothing here "
          "has been measured on real patient images.", "",
          "## Model", "",
          f"- name/version: `{md['plateqc.model_name']}` {md['plateqc.model_version']}; contract "
          f"{md['plateqc.contract']}; preprocessing `{md['plateqc.preprocessing']}`",
          f"- input `[N,2,{md['plateqc.input_size']},{md['plateqc.input_size']}]`; layers "
          f"{', '.join('`' + l + '`' for l in json.loads(md['plateqc.layers']))}",
          f"- architecture: `models/net.py` {backbone_text(tr)}, "
          + head_text(tr) + "; BatchNorm folded into the convolutions at export",
          f"- shipped threshold `plateqc.threshold` = {float(md['plateqc.threshold']):.4f} "
          f"(P(unusable) >= threshold means unusable); artifact threshold "
          f"{md['plateqc.artifact_threshold']}",
          *([f"- feature-distance review flag (optional output `feature_distance`, "
             "`plateqc_model/ood.py`): a plate at or above `plateqc.feature_distance_threshold` "
             f"= {float(md['plateqc.feature_distance_threshold']):.4f} is one the model has "
             "not seen the like of (the 99th percentile on the validation plates of the training "
             "families; from 1.3.2 the largest over layers `stem`, `early`, `middle`, `last` of a "
             "whitened distance of each layer's per-channel activation mean and standard "
             "deviation); plateqc sends it to human review unless a site sets `[infer] "
             "review_unfamiliar = false`: it flags about 1 % of in-family plates (all called "
             "unusable), CT / MR and most other non-dental images, but not family B "
             "(see the notes below); rates per family and on the development foreign set in "
             f"`models/results/ood-{md['plateqc.model_version']}.json`"]
            if "plateqc.feature_distance_threshold" in md else []),
          f"- training seed {md['plateqc.training_seed']}; data hash `{md['plateqc.data_hash']}`; "
          f"built from commit `{md['plateqc.git_commit']}`", "",
          "## Intended use", "",
          "Flag intraoral phosphor-plate radiographs that need a retake because of plate, scanner "
          "or operator artifacts, with artifact-type reasons and a Grad-CAM overlay for the "
          "reviewer. It is a decision aid: a person confirms every reject. Not validated on real "
          "plates; expect a domain gap until it is evaluated (and likely fine-tuned) on real, "
          "labelled plates.", "",
          "## Training", "",
          f"- data: {train_data(tr)}, preprocessed by `plateqc_ref/preprocess.py` and cached as "
          f"float16; validation {tr['val_plates']} plates ({tr['args']['val']}) for the threshold"
          + (f"; the per-epoch validation AUC below is measured on the first "
             f"{tr['args']['val_monitor']} of them" if tr['args'].get('val_monitor') else ""),
          f"- {tr['epochs_run']} epochs, batch {tr['args']['batch']}, AdamW one-cycle lr "
          f"{tr['args']['lr']}, random flips; loss = class cross-entropy (unusable weight "
          f"{tr['args']['unusable_weight']}) + type BCE"
          + (f" (positives weighted by min({tr['args']['type_pos_weight_cap']:g}, neg/pos))"
             if tr['args'].get('type_pos_weight_cap', 0) > 0 else "")
          + (f" + {tr['args']['sev_weight']} x ordinal severity BCE (training only: a separate "
             "linear layer on the pooled features predicts, per type, severity >= 2 and >= 3, "
             "the boundary the usable/unusable rule turns on; it is not exported)"
             if tr['args'].get('sev_weight', 0) > 0 else "")
          + f" + {tr['args']['attn_weight']} x "
          "mask-guided attention term (training only: the closed-form last-layer CAM's "
          "spatial softmax is pushed into the local artifact masks; masks are never a model input)"
          + (f" + {tr['args']['dense_weight']:g} x dense mask term (training only: 1x1 "
             "convolutions on `middle` and `last` predict each type's artifact mask; not exported)"
             if tr['args'].get('dense_weight', 0) > 0 else ""),
          *( [f"- spatial style randomisation of the cached inputs (training only, "
              f"`plateqc_model/style.py`): each scene and its twin alike, with p = "
              f"{tr['args']['style_aug']:g}, channel 0 sharpened or softened at a random scale and "
              "ranked again, channel 1 recomputed"] if tr['args'].get('style_aug') else []),
          *lineage(tr),
          f"- training time {tr['train_seconds'] / 60:.1f} min with "
          f"{tr['args'].get('threads', 2)} torch thread(s) on the 2-core build machine, shared "
          "with other work",
          f"- threshold chosen on validation for sensitivity >= {tr['target_sens']} (contract aim "
          f">= 0.95): validation AUC {f3(tr['val_auc'])}, sensitivity "
          f"{f3(tr['val_sensitivity'])}, specificity {f3(tr['val_specificity'])}", "",
          "Per epoch:", "",
          "| epoch | minutes | class loss | type loss | severity loss | attention loss | "
          "dense loss | val AUC |",
          "|---|---|---|---|---|---|---|---|"]
    for h in tr["history"]:
        sev = f"{h['sev']:.4f}" if "sev" in h else "-"
        dense = f"{h['dense']:.4f}" if h.get("dense") else "-"
        L.append(f"| {h['epoch']} | {h['seconds'] / 60:.1f} | {h['cls']:.4f} | {h['typ']:.4f} | "
                 f"{sev} | {h['attn']:.4f} | {dense} | {h['val_auc']:.4f} |")
    L += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for t, v, ok in target_rows(ev):
        L.append(f"| {t} | {v} | {'yes' if ok else '**no**'} |")
    gate = json.loads(Path(a.gate).read_text()) if a.gate and Path(a.gate).exists() else None
    if gate:
        L += ["", "### Out of family (rendering family B, `models/famb`)", "",
              f"{gate['classification']['n']} plates of family B (seed {gate['seed']}xxxxxx, "
              "`make -C models gate`): written separately from the training generator and never "
              "used for training, choosing between candidates or the threshold.", "",
              "| target | measured | met |", "|---|---|---|"]
        for t, v, ok in gate_target_rows(gate):
            L.append(f"| {t} | {v} | {'yes' if ok else '**no**'} |")
    choice = (json.loads(Path(a.choice).read_text())
              if a.choice and Path(a.choice).exists() else None)
    if choice:
        L += ["", "## How this model was chosen", "",
              "By the rule in `models/plan-1.3.md`, written before training, on family A only: "
              f"eligible when validation AUC >= {choice['rule']['min_val_auc']} and validation "
              f"`last` pointing game >= {choice['rule']['min_val_pointing_last']}; then "
              f"{choice['rule']['rank']}.", "",
              "| candidate | val AUC | val `last` pointing | shifted spec @recall 0.95 | "
              "shifted AUC | chosen |", "|---|---|---|---|---|---|"]
        base = choice.get("baseline")
        for r in choice["candidates"] + ([base] if base else []):
            mark = ("baseline (shipped before)" if r is base
                    else "yes" if r["run"] == choice["chosen"] else "no")
            L.append(f"| `{r['run']}` | {f3(r['val_auc'])} | {f3(r['val_pointing_last'])} | "
                     f"{f3(r['shifted_spec_at_recall_0.95'])} | {f3(r['shifted_auc'])} | "
                     f"{mark} |")
        if choice.get("chosen_by") == "fallback":
            L += ["", "**No run met the eligibility line.** " + fallback_sentence(choice)]
        ag = gate.get("against") if gate else None
        if ag:
            L += ["", f"Gate against {ag['baseline_version']}: AUC {f3(ag['auc']['new'])} vs "
                  f"{f3(ag['auc']['baseline'])}, specificity at each model's threshold "
                  f"{f3(ag['specificity']['new'])} vs {f3(ag['specificity']['baseline'])}: "
                  f"{'pass' if ag['pass'] else '**fail**'}."]
    L += ["", "## Classification", ""] + cls_table(ev)
    if gate:
        c = gate["classification"]
        L += [f"| family B (seed {gate['seed']}, Plate path) | {c['n']} | {c['n_unusable']} | "
              f"{f3(c['auc'])} | {f3(c['sensitivity'])} | {f3(c['specificity'])} | "
              f"{f3(c['recall_at_spec_0.90'])} | {f3(c['spec_at_recall_0.95'])} |"]
    if "shifted_dicom" in ev:
        L += ["", "DICOM path (shifted seeds written by `synth.dicom_io.write_dicom`, decoded by "
              "pydicom) against the in-memory Plate path, per transfer syntax:", "",
              "| syntax | plates | max abs input difference | max abs P difference | verdict flips |",
              "|---|---|---|---|---|"]
        for s, v in ev["shifted_dicom"]["per_syntax"].items():
            L.append(f"| {s} | {v['n']} | {v['max_abs_input_diff']:.4f} | {v['max_abs_dp']:.4f} | "
                     f"{v['verdict_flips']} |")
    for key, label in (("heldout", "held-out"), ("shifted", "shifted")):
        if key not in ev:
            continue
        r = ev[key]
        L += ["", f"## Per artifact type ({label})", "",
              "Type recall: artifact score >= artifact threshold on plates carrying the type "
              "(any severity); unusable recall: unusable plates carrying the type that the class "
              "head flags at the shipped threshold.", ""] + type_table(r)
        L += ["", f"### Per severity ({label})", ""] + sev_table(r)
        L += ["", f"## Explanations ({label})", ""] + expl_table(r)
    if gate:
        L += ["", "## Per artifact type (family B)", ""] + type_table(gate)
        L += ["", "### Per severity (family B)", ""] + sev_table(gate)
        fp = gate["clean_false_positive_rate"]
        L += ["", f"### False reasons on clean family-B plates ({fp['plates']} plates)", "",
              "| type | share of clean plates with the type's score >= artifact threshold |",
              "|---|---|"]
        L += [f"| {k} | {f3(v)} |" for k, v in fp.items() if k != "plates"]
        L += ["", "## Explanations (family B)", ""] + expl_table(gate)
        de = gate["deletion"]
        L += ["", f"Deletion test ({de['plates']} unusable family-B plates with local artifacts "
              "only): the `last` grid's cells inside the plate are replaced by a blurred copy of "
              "the input, in Grad-CAM order or in random order; mean P(unusable):", "",
              "| deleted share | " + " | ".join(f"{f:g}" for f in de["fractions"]) + " | area |",
              "|---|" + "---|" * (len(de["fractions"]) + 1),
              "| Grad-CAM order | " + " | ".join(f"{v:.3f}" for v in de["gradcam_curve"])
              + f" | {f3(de['gradcam_area'])} |",
              "| random order | " + " | ".join(f"{v:.3f}" for v in de["random_curve"])
              + f" | {f3(de['random_area'])} |"]
    notes = Path(a.notes)
    if notes.exists():
        L += ["", notes.read_text().rstrip()]
    L += ["", "## Reproduce", "", "```sh", "make -C models model      # data, train, export+verify, "
          "evaluate, card", "make -C models fixtures   # tests/fixtures + demo/inbox", "```", ""]
    Path(a.out).write_text("\n".join(L))
    print("wrote", a.out)


if __name__ == "__main__":
    main()
