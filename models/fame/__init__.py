"""plateqc synthetic plate family E (training): anatomy randomisation over families A, C and D.

Not a renderer: per scene it picks A (models/synth), C (models/famc) or D (models/famd) and hands
that family's `make_pair` wide anatomy `style` overrides. See README.md."""
from synth.artifacts import ARTIFACT_NAMES, ARTIFACT_TYPES, GLOBAL_TYPES
from synth.plate import Plate

from .plate import BASES, RANGES, draw_style, make_pair, make_plate

__all__ = ["make_plate", "make_pair", "draw_style", "RANGES", "BASES", "Plate", "ARTIFACT_NAMES",
           "ARTIFACT_TYPES", "GLOBAL_TYPES"]
