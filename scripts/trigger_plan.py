"""Check what a triggering GitHub event asks for, and plan the run: which commit, which model.

The workflows' command line; the logic is purchase_delivery.trigger_plan (delivery/), tested there.
`python scripts/trigger_plan.py --help` says how to use it.
"""

from purchase_delivery.trigger_plan import main

if __name__ == "__main__":
    raise SystemExit(main())
