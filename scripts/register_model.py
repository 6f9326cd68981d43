"""Promote a training run's model to an environment's MLflow alias, behind a quality gate.

The workflows' command line; the logic is purchase_delivery.register_model (delivery/), tested there.
`python scripts/register_model.py --help` says how to use it.
"""

from purchase_delivery.register_model import main

if __name__ == "__main__":
    raise SystemExit(main())
