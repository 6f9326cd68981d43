"""File names of a prepared model directory that code without NumPy needs too.

The deploy's bake step (``scripts/bake_model.py`` -> ``app.model.bake`` -> ``app.model.source``)
runs with the standard library, PyYAML and MLflow's client only (scripts/bake-requirements.in):
whatever it imports must not pull in NumPy or LightGBM.
"""

# The compiled form of the training pipeline (app.model.compiled).
COMPILED_FILE = "serving_compiled.json"
