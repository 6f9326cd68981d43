"""The image section's build context: the repository's layout, the bench's model baked in."""

from __future__ import annotations

from pathlib import Path

from purchase_bench.image import build_context


def test_the_context_holds_the_app_packages_and_the_baked_model(tmp_path: Path) -> None:
    model = tmp_path / "baked"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")

    build_context(tmp_path / "context", model)

    api = tmp_path / "context" / "purchase_predict_api"
    assert (api / "app" / "model" / "trees.py").is_file()  # the package named model is kept
    assert (api / "model" / "MLmodel").is_file()  # and the model is the bench's
    assert (api / "Dockerfile").is_file()
    assert (tmp_path / "context" / "contract" / "src" / "purchase_contract").is_dir()
    assert not (api / "tests").exists()
    assert not list(api.rglob("__pycache__"))
