"""Check that a checked-out repository holds what the reusable workflows will read from it.

The workflows' command line; the logic is purchase_delivery.check_layout (delivery/), tested there.
`python scripts/check_layout.py --help` says how to use it.
"""

from purchase_delivery.check_layout import main

if __name__ == "__main__":
    raise SystemExit(main())
