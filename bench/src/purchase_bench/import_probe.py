"""Seconds to import some modules in a fresh interpreter:
``python -m purchase_bench.import_probe MODULE...`` prints them."""

import importlib
import sys
import time


def main() -> None:
    started = time.perf_counter()
    for name in sys.argv[1:]:
        importlib.import_module(name)
    print(time.perf_counter() - started)


if __name__ == "__main__":
    main()
