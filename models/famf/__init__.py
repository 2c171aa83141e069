"""Family F synthetic intraoral PSP plates: a 3-D jaw scene projected by diverging rays,
with its own readout/processing chain and artifact renderings. See README.md."""
from synth.artifacts import ARTIFACT_NAMES, ARTIFACT_TYPES, GLOBAL_TYPES
from synth.plate import Plate

from .plate import make_pair, make_plate

__all__ = ["make_pair", "make_plate", "Plate", "ARTIFACT_NAMES", "ARTIFACT_TYPES", "GLOBAL_TYPES"]
