"""plateqc synthetic plate family D (training): see README.md."""
from synth.artifacts import ARTIFACT_NAMES, ARTIFACT_TYPES, GLOBAL_TYPES
from synth.plate import Plate

from .plate import make_pair, make_plate

__all__ = ["make_plate", "make_pair", "Plate", "ARTIFACT_NAMES", "ARTIFACT_TYPES", "GLOBAL_TYPES"]
