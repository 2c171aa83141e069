"""Family B: an independent synthetic PSP plate generator used ONLY as an out-of-family gate.

Never train, select models or choose thresholds on it (see README.md).
"""
from synth.artifacts import ARTIFACT_NAMES, ARTIFACT_TYPES, GLOBAL_TYPES  # noqa: F401
from synth.plate import Plate  # noqa: F401

from .plate import make_plate, sample_request  # noqa: F401

__all__ = ["make_plate", "sample_request", "Plate", "ARTIFACT_NAMES", "ARTIFACT_TYPES",
           "GLOBAL_TYPES"]
