"""The written rules of plan-1.3.md, in one place and without PyTorch, so the tests can hold
them: which run is eligible and chosen, the fallback when none is, and the family-B comparison
that lets a fallback run ship or stops it."""
from __future__ import annotations

MIN_AUC = 0.98
MIN_POINTING = 0.80
TIE = 0.01


def choose(rows: list[dict]) -> dict | None:
    """Eligible: validation AUC and `last` pointing at or above the lines; among them the higher
    family-A shifted specificity at recall 0.95, ties (within TIE) broken by validation AUC."""
    ok = [r for r in rows if r["val_auc"] >= MIN_AUC and r["val_pointing_last"] >= MIN_POINTING]
    if not ok:
        return None
    best = max(r["shifted_spec_at_recall_0.95"] for r in ok)
    close = [r for r in ok if best - r["shifted_spec_at_recall_0.95"] <= TIE]
    return max(close, key=lambda r: r["val_auc"])


def fallback(rows: list[dict], baseline: dict | None,
             tolerance: tuple[float, float] | None = None) -> dict | None:
    """Round 2's rule when no run is eligible: the run with the highest validation AUC, if it
    beats the shipped baseline on both family-A measures (it still has to pass `compare`).
    When the validation set spans two training families (round 5), the baseline comparison
    uses the run's AUC on the family-A part (`fallback_val_auc`), the plates the baseline was
    measured on. With `tolerance` = (AUC, specificity) (round 7, whose baseline is the shipped
    1.3.0 rather than 1.2.0) the run need only be no worse than the baseline by more than
    those margins on family A: the gain it must show is on family B (`compare`)."""
    if not rows or baseline is None:
        return None
    best = max(rows, key=lambda r: r["val_auc"])
    auc = best.get("fallback_val_auc", best["val_auc"])
    # A baseline measured on the runs' several validation sets compares its family-A part too.
    base_auc = baseline.get("fallback_val_auc", baseline["val_auc"])
    spec = best["shifted_spec_at_recall_0.95"]
    if tolerance is None:
        ok = auc > base_auc and spec > baseline["shifted_spec_at_recall_0.95"]
    else:
        ok = (auc >= base_auc - tolerance[0]
              and spec >= baseline["shifted_spec_at_recall_0.95"] - tolerance[1])
    return best if ok else None


def compare(new: dict, base: dict, name: str) -> dict:
    """Pass/fail of one model against the shipped one on family B: AUC and specificity at each
    model's own threshold, both no worse. It passes or stops one run; it never picks between
    runs."""
    keys = ("auc", "specificity")
    nc, bc = new["classification"], base["classification"]
    return {"baseline": name, "baseline_version": base.get("model_version"),
            **{k: {"new": nc[k], "baseline": bc[k]} for k in keys},
            "pass": all(nc[k] >= bc[k] for k in keys)}
