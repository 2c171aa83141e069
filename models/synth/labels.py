"""The labelling rule (see LABELS.md): artifacts + masks + diagnostic region -> usable/unusable."""
from __future__ import annotations

import numpy as np

from .artifacts import GLOBAL_TYPES

# a local severity-2 artifact makes the plate unusable when its mask covers at least this
# much of the diagnostic region (mm^2; 0.25 mm^2 = e.g. a 0.1 mm wide scratch 2.5 mm long)
OVERLAP_MM2 = 0.25


def artifact_verdict(name: str, severity: int, mask: np.ndarray | None, diagnostic: np.ndarray,
                     px_per_mm: float) -> tuple[bool, str]:
    """(unusable, reason) for one artifact."""
    if severity <= 0:
        return False, "absent"
    if severity >= 3:
        return True, "severity 3"
    if severity == 1:
        return False, "severity 1 (cosmetic)"
    if name in GLOBAL_TYPES:
        return True, "global type at severity 2"
    overlap_px = int(np.count_nonzero(mask & diagnostic)) if mask is not None else 0
    overlap_mm2 = overlap_px / (px_per_mm * px_per_mm)
    if overlap_mm2 >= OVERLAP_MM2:
        return True, f"severity 2 overlapping the diagnostic region ({overlap_mm2:.2f} mm2)"
    return False, f"severity 2 outside the diagnostic region ({overlap_mm2:.2f} mm2)"


def label(artifacts: list[dict], masks: dict, diagnostic: np.ndarray, px_per_mm: float) -> bool:
    """True = usable. `artifacts` is a list of {type, severity}; masks maps type -> bool mask."""
    for a in artifacts:
        bad, _ = artifact_verdict(a["type"], int(a["severity"]), masks.get(a["type"]), diagnostic,
                                  px_per_mm)
        if bad:
            return False
    return True
