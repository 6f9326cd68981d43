"""actions/cloud-run-deploy's reference-sample check and progressive rollout: ``rollout.py --help``.

The action's command line; the logic is purchase_delivery.rollout (delivery/), tested there.
"""

from purchase_delivery.rollout import main

if __name__ == "__main__":
    raise SystemExit(main())
