"""The train workflow's Settings, Read-the-training-run and Result steps: ``train_steps.py --help``.

The workflows' command line; the logic is purchase_delivery.train_steps (delivery/), tested there.
"""

from purchase_delivery.train_steps import main

if __name__ == "__main__":
    raise SystemExit(main())
