"""`nox -s serve` with nothing to serve from (after `local_cloud.py down` and no store at all):
it says what to run first and creates no empty MLflow store (issue 13).

The project's noxfile is imported for real; its session helper that finds the tracking URI runs
in a nox session of its own, aimed at empty directories (no local cloud state, no embedded store:
a copy of the root pyproject whose ``local_mlflow_store`` names a file under tmp_path, read through
``$PURCHASE_PREDICT_CONFIG``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not shutil.which("nox"), reason="needs nox on PATH (pip install nox)")
def test_serve_without_any_store_says_what_to_run_and_creates_none(tmp_path: Path) -> None:
    state, embedded = tmp_path / "local-cloud", tmp_path / "mlruns" / "mlflow.db"
    (tmp_path / "noxfile.py").write_text(
        "import runpy, sys\n"
        "from pathlib import Path\n"
        "import nox, os\n"
        # The session's `python` is this suite's, which has the contract installed (set here:
        # a pyenv shim running nox puts its own Python first on PATH).
        f"os.environ['PATH'] = {str(Path(sys.executable).parent) + os.pathsep!r} + os.environ['PATH']\n"
        f"project = runpy.run_path({str(ROOT / 'noxfile.py')!r}, run_name='project_noxfile')\n"
        "tracking_uri = project['_tracking_uri']\n"
        f"tracking_uri.__globals__['LOCAL_CLOUD_STATE'] = Path({str(state)!r})\n"
        f"tracking_uri.__globals__['LOCAL_CLOUD_ENV'] = Path({str(state / 'env.json')!r})\n"
        "@nox.session(python=False)\n"
        "def where(session):\n"
        "    uri, stop = tracking_uri(session)\n"
        "    session.log(f'would serve from {uri}')\n"
    )
    config = tmp_path / "pyproject.toml"
    config.write_text(
        (ROOT / "pyproject.toml")
        .read_text(encoding="utf-8")
        .replace(
            "[tool.purchase-predict]\n",
            "[tool.purchase-predict]\nlocal_mlflow_store = 'mlruns/mlflow.db'\n",
            1,
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PURCHASE_PREDICT_CONFIG"] = str(config)
    done = subprocess.run(
        [shutil.which("nox"), "-f", str(tmp_path / "noxfile.py"), "-s", "where"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "no model registered yet: run `nox -s pipeline` (or `nox -s train`) first" in output
    assert "would serve from" not in output
    assert not embedded.exists() and not state.exists()
    assert not list(tmp_path.rglob("*.db")), "an empty MLflow store was left behind"
