"""``python -m app.prepare DIR``: check a baked model directory and prepare its fast start.

The image build runs it once after copying the model in: the model is loaded from its MLflow
format, checked and warmed up (a broken model fails the build, not the deploy), then written
as a pickle that this image's exact libraries load in a fraction of the time.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from app.core.logging import configure_logging
from app.model.loading import PREPARED_FILE, prepare_model_dir
from purchase_contract.model_dir import ModelSourceError

logger = logging.getLogger("app.prepare")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; 0 prepared, 2 the directory holds no usable model."""
    parser = argparse.ArgumentParser(prog="python -m app.prepare", description=__doc__)
    parser.add_argument(
        "model_dir", type=Path, help="directory written by scripts/bake_model.py (app.model.bake)"
    )
    args = parser.parse_args(argv)
    configure_logging("INFO")
    try:
        model = prepare_model_dir(args.model_dir)
    except ModelSourceError as err:
        logger.error("cannot prepare the model: %s", err)
        return 2
    logger.info(
        "prepared %s version %s: %s",
        model.meta.name,
        model.meta.version,
        args.model_dir / PREPARED_FILE,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
