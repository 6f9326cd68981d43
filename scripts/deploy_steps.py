"""The deploy-api workflow's Settings and Result steps: ``deploy_steps.py --help``.

The workflows' command line; the logic is purchase_delivery.deploy_steps (delivery/), tested there.
"""

from purchase_delivery.deploy_steps import main

if __name__ == "__main__":
    raise SystemExit(main())
