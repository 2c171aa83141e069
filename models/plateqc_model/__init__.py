"""Training, export, verification, evaluation and the model card of the bundled classifier.

Run from `models/` as modules (`python -m plateqc_model.train ...`, as the Makefile does); the
generators (`synth`, `famb`) and the reference (`plateqc_ref`) are sibling packages there.
"""
