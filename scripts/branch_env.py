"""Map a git ref, a GitHub event or an environment name to a deployment environment.

The workflows' command line; the logic is purchase_delivery.branch_env (delivery/), tested there.
`python scripts/branch_env.py --help` says how to use it.
"""

from purchase_delivery.branch_env import main

if __name__ == "__main__":
    raise SystemExit(main())
