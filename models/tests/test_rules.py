"""The written choice rules of plan-1.3.md (plateqc_model.rules)."""
from plateqc_model.rules import choose, compare, fallback


def run(name, auc, pointing, spec):
    return {"run": name, "val_auc": auc, "val_pointing_last": pointing,
            "shifted_spec_at_recall_0.95": spec}


def test_only_runs_over_both_lines_are_eligible():
    rows = [run("a", 0.99, 0.79, 0.9), run("b", 0.979, 0.9, 0.9)]
    assert choose(rows) is None
    assert choose(rows + [run("c", 0.98, 0.80, 0.1)])["run"] == "c"


def test_shifted_specificity_ranks_and_a_near_tie_goes_to_validation_auc():
    rows = [run("a", 0.985, 0.85, 0.50), run("b", 0.99, 0.85, 0.40)]
    assert choose(rows)["run"] == "a"
    rows = [run("a", 0.985, 0.85, 0.50), run("b", 0.99, 0.85, 0.495)]
    assert choose(rows)["run"] == "b"


def test_fallback_needs_a_win_over_the_baseline_on_both_family_a_measures():
    base = run("base", 0.77, 0.6, 0.25)
    rows = [run("g", 0.89, 0.7, 0.37), run("h2", 0.92, 0.73, 0.36)]
    assert fallback(rows, base)["run"] == "h2"
    assert fallback(rows, run("base", 0.77, 0.6, 0.40)) is None
    assert fallback(rows, None) is None
    assert fallback([], base) is None


def test_the_comparison_gate_fails_on_either_measure():
    def gate(auc, spec):
        return {"classification": {"auc": auc, "specificity": spec}, "model_version": "x"}
    assert compare(gate(0.80, 0.03), gate(0.70, 0.027), "b")["pass"]
    assert not compare(gate(0.80, 0.006), gate(0.70, 0.027), "b")["pass"]
    assert not compare(gate(0.69, 0.5), gate(0.70, 0.027), "b")["pass"]


def test_with_two_training_families_the_fallback_compares_the_family_a_part():
    base = run("base", 0.756, 0.6, 0.244)
    both = run("l", 0.95, 0.75, 0.46)
    both["fallback_val_auc"] = 0.70   # higher over both families, lower on family A alone
    assert fallback([both], base) is None
    both["fallback_val_auc"] = 0.94
    assert fallback([both], base)["run"] == "l"


def test_round_7_fallback_accepts_a_small_loss_on_family_a_and_no_more():
    base = run("1.3.0", 0.933, 0.72, 0.396)
    n = run("n", 0.95, 0.74, 0.38)
    n["fallback_val_auc"] = 0.930      # 0.003 under the baseline on family A
    assert fallback([n], base) is None                     # round 2's rule wants a win
    assert fallback([n], base, (0.005, 0.03))["run"] == "n"
    n["fallback_val_auc"] = 0.927      # 0.006 under: beyond the margin
    assert fallback([n], base, (0.005, 0.03)) is None
    n["fallback_val_auc"] = 0.933
    n["shifted_spec_at_recall_0.95"] = 0.36   # 0.036 under on the shifted plates
    assert fallback([n], base, (0.005, 0.03)) is None


def test_a_baseline_measured_on_several_families_is_compared_on_its_family_a_part():
    base = run("1.3.0", 0.90, 0.72, 0.396)      # over A + C + D, where 1.3.0 never saw D
    base["fallback_val_auc"] = 0.933            # on val4 alone
    n = run("n", 0.95, 0.74, 0.40)
    n["fallback_val_auc"] = 0.920
    assert fallback([n], base, (0.005, 0.03)) is None
    n["fallback_val_auc"] = 0.930
    assert fallback([n], base, (0.005, 0.03))["run"] == "n"
