"""The deploy's bake step runs with the standard library, PyYAML and MLflow's client only
(scripts/bake-requirements.in): ``scripts/bake_model.py`` must import without NumPy, LightGBM,
scikit-learn or pandas. (An import of the compiled form's file name pulled NumPy in, and every
deploy's bake failed with ModuleNotFoundError.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

API_DIR = Path(__file__).parents[1]

BLOCKER = """
import sys

class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"numpy", "lightgbm", "sklearn", "pandas", "scipy"}:
            raise ImportError(f"{name} is not in the bake step's environment")
        return None

sys.meta_path.insert(0, _Blocker())
"""


def test_the_bake_script_imports_without_the_scientific_stack(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    done = subprocess.run(
        [sys.executable, str(API_DIR.parent / "scripts" / "bake_model.py"), "--help"],
        check=False,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": f"{tmp_path}:{API_DIR}:{API_DIR.parent / 'contract' / 'src'}"},
    )
    assert done.returncode == 0, done.stderr
    assert "--model-uri" in done.stdout
