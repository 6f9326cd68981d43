"""`nox -s serve` with nothing to serve from (after `local_cloud.py down` and no store at all):
it says what to run first and creates no empty MLflow store (issue 13).

The project's noxfile is imported for real; its session helper that finds the tracking URI runs
in a nox session of its own, aimed at empty directories (no local cloud state, no embedded store).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not shutil.which("nox"), reason="needs nox on PATH (pip install nox)")
def test_serve_without_any_store_says_what_to_run_and_creates_none(tmp_path: Path) -> None:
    state, embedded = tmp_path / "local-cloud", tmp_path / "mlruns" / "mlflow.db"
    (tmp_path / "noxfile.py").write_text(
        "import runpy, sys\n"
        "from pathlib import Path\n"
        "import nox\n"
        f"project = runpy.run_path({str(ROOT / 'noxfile.py')!r}, run_name='project_noxfile')\n"
        "tracking_uri = project['_tracking_uri']\n"
        f"tracking_uri.__globals__['LOCAL_CLOUD_STATE'] = Path({str(state)!r})\n"
        f"tracking_uri.__globals__['LOCAL_CLOUD_ENV'] = Path({str(state / 'env.json')!r})\n"
        f"sys.path.insert(0, {str(ROOT / 'scripts')!r})\n"
        "import project_config\n"
        f"project_config.DEFAULT_MLFLOW_DB = Path({str(embedded)!r})\n"
        "@nox.session(python=False)\n"
        "def where(session):\n"
        "    uri, stop = tracking_uri(session)\n"
        "    session.log(f'would serve from {uri}')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
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
