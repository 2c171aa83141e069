"""The model card's account of a continued run (plateqc_model/card.py `lineage`)."""
import json

from plateqc_model.card import lineage


def _run(base, name, epochs, train, seed, init=None, style=0.0):
    d = base / name
    d.mkdir(parents=True)
    args = {"train": train, "lr": 1.5e-3, "style_aug": style}
    if init:
        args["init"] = init
    (d / "train_result.json").write_text(json.dumps(
        {"epochs_run": epochs, "seed": seed, "args": args}))


def test_a_continued_run_names_every_run_it_started_from(tmp_path):
    _run(tmp_path, "runs/a", 18, "train4,trainc5", 1238)
    _run(tmp_path, "runs/b", 6, "train4,trainc5,traind7", 1239, init="runs/a")
    tr = {"args": {"init": "runs/b"}}
    lines = lineage(tr, tmp_path)
    assert len(lines) == 3
    assert "`runs/b`: 6 epochs" in lines[0] and "seed 1239" in lines[0]
    assert "`runs/a`: 18 epochs over `train4,trainc5`" in lines[1]
    assert "random weights" in lines[2]


def test_a_run_from_scratch_has_no_lineage_and_a_missing_record_is_said(tmp_path):
    assert lineage({"args": {}}, tmp_path) == []
    lines = lineage({"args": {"init": "runs/gone"}}, tmp_path)
    assert len(lines) == 1 and "not in this checkout" in lines[0]


def test_a_loop_of_inits_ends(tmp_path):
    _run(tmp_path, "runs/a", 1, "t", 1, init="runs/b")
    _run(tmp_path, "runs/b", 1, "t", 2, init="runs/a")
    lines = lineage({"args": {"init": "runs/a"}}, tmp_path)
    assert len(lines) == 2


def test_the_card_names_the_head_the_run_trained():
    from plateqc_model.card import head_text
    pooled = head_text({"args": {"train": "train4"}})          # runs from before --head
    assert "linear heads" in pooled and "maps" not in pooled
    assert head_text({"args": {"head": "pooled"}}) == pooled
    maps = head_text({"args": {"head": "maps"}})
    assert "artifact-type maps" in maps and "only" in maps


def test_the_card_counts_the_convolutions_a_deepened_run_has():
    from plateqc_model.card import backbone_text
    plain = backbone_text({"width": 16, "size": 256, "args": {"train": "train4"}})
    assert "7 conv3x3" in plain and "residual" not in plain and "last 128x16x16" in plain
    deep = backbone_text({"width": 16, "size": 256, "args": {"extra_blocks": 1}})
    assert "9 conv3x3" in deep and "2 in 1 residual block at the end" in deep


def _choice(cand_auc, cand_spec):
    return {"rule": {"fallback": "within 0.005 val AUC and 0.03 shifted spec"},
            "chosen": "runs/new", "chosen_by": "fallback",
            "candidates": [{"run": "runs/new", "val_auc": cand_auc, "fallback_val_auc": cand_auc,
                            "shifted_spec_at_recall_0.95": cand_spec}],
            "baseline": {"run": "old.onnx", "val_auc": 0.94, "fallback_val_auc": 0.94,
                         "shifted_spec_at_recall_0.95": 0.58}}


def test_fallback_sentence_says_beats_only_when_both_measures_are_better():
    from plateqc_model.card import fallback_sentence
    both = fallback_sentence(_choice(0.945, 0.60))
    assert "beats the model shipped before on both" in both and "below" not in both
    one = fallback_sentence(_choice(0.945, 0.556))
    assert "beats" not in one
    assert "below it on shifted specificity at recall 0.95 (0.556 vs 0.580)" in one
    assert "validation AUC" not in one.split("below it on")[1]
    assert "within 0.005 val AUC" in one
