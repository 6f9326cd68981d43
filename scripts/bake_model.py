#!/usr/bin/env python3
"""Bake a registered model into the API image's build context: ``bake_model.py --help``.

The logic is the API's (``purchase_predict_api/app/model/bake.py``); this is its command line
for the workflows and the local pipeline. Needs the API and the contract installed
(``pip install -e contract -e purchase_predict_api[mlflow]``).
"""

from __future__ import annotations

import sys

from app.model.bake import main

if __name__ == "__main__":
    sys.exit(main())
