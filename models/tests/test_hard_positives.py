"""The in-family diagnosis of hard positives (plateqc_model.hard_positives)."""
import numpy as np

from plateqc_model import data as D
from plateqc_model.hard_positives import groups

T = {n: k for k, n in enumerate(D.TYPE_NAMES)}


def _plates():
    rng = np.random.default_rng(0)
    n_clean, n_each = 200, 50
    sev, p, y = [], [], []
    for _ in range(n_clean):                     # clean: scores spread over [0, 0.6)
        sev.append(np.zeros(14)); p.append(rng.uniform(0, 0.6)); y.append(False)
    for _ in range(n_each):                      # fading at 2 alone: scored like clean plates
        s = np.zeros(14); s[T["fading"]] = 2
        sev.append(s); p.append(rng.uniform(0, 0.6)); y.append(True)
    for _ in range(n_each):                      # scratch at 2 alone: always above clean
        s = np.zeros(14); s[T["scratch"]] = 2
        sev.append(s); p.append(rng.uniform(0.7, 1.0)); y.append(True)
    for _ in range(n_each):                      # fading at 2 with scratch at 3: not "fading only"
        s = np.zeros(14); s[T["fading"]] = 2; s[T["scratch"]] = 3
        sev.append(s); p.append(0.99); y.append(True)
    for _ in range(n_each):                      # cosmetic usable plates: a severity-1 dust
        s = np.zeros(14); s[T["dust"]] = 1
        sev.append(s); p.append(rng.uniform(0.5, 0.9)); y.append(False)
    return np.array(p), np.array(y), np.array(sev, np.float32)


def test_a_type_scored_like_clean_plates_ranks_at_chance_and_a_separated_one_at_one():
    p, y, sev = _plates()
    g = groups(p, y, sev, threshold=0.65)
    only = g["severity2_only"]
    assert only["fading"]["plates"] == 50, "plates with a second decisive type are left out"
    assert abs(only["fading"]["auc_vs_clean"] - 0.5) < 0.12
    assert only["fading"]["below_threshold"] == 1.0
    assert only["scratch"]["auc_vs_clean"] == 1.0 and only["scratch"]["below_threshold"] == 0.0
    assert "dust" not in only, "a type with no decisive plate of its own has no row"
    assert (g["clean"], g["cosmetic"], g["unusable"]) == (200, 50, 150)
    # Cosmetic plates score above clean ones, so they are harder to tell from unusable ones.
    assert g["auc_cosmetic_vs_unusable"] < g["auc_clean_vs_unusable"]
    assert g["spec_cosmetic_at_recall_0.95"] < g["spec_clean_at_recall_0.95"]


def test_leaving_out_the_hard_groups_raises_the_auc_by_what_they_cost():
    p, y, sev = _plates()
    g = groups(p, y, sev, threshold=0.65)
    assert g["fading_delayed_only"] == 50, "fading with a severity-3 scratch is not faint"
    assert g["auc_without_fading_delayed_only"] > g["auc"]
    assert g["auc_without_cosmetic"] > g["auc"]
    assert g["auc_without_both"] == 1.0, "what is left is scratch and fading+scratch vs clean"
