"""``python -m purchase_contract``: print or write what is generated from the contract."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from purchase_contract.config import ConfigError, load_config
from purchase_contract.docs import feature_table, features_markdown
from purchase_contract.features import example_session_json

GENERATED = Path("docs") / "features.md"


def _generated_path() -> Path:
    return load_config().root / GENERATED


def main(argv: list[str] | None = None) -> int:
    """Print the feature table or the example session, or write (or check) docs/features.md."""
    parser = argparse.ArgumentParser(
        prog="python -m purchase_contract",
        description="What is generated from the feature list.",
        epilog="Exit status: 0 done (or up to date); 1 --check found docs/features.md stale; "
        "2 bad configuration.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("features", help="the feature table, in Markdown")
    commands.add_parser("example", help="one example session, as the API takes it (JSON)")
    write = commands.add_parser("write", help=f"write {GENERATED} next to the configuration")
    write.add_argument("--check", action="store_true", help="only say whether it is up to date")
    args = parser.parse_args(argv)

    if args.command == "features":
        sys.stdout.write(feature_table())
    elif args.command == "example":
        sys.stdout.write(example_session_json())
    else:
        try:
            path = _generated_path()
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        wanted = features_markdown()
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current == wanted:
            print(f"{path} is up to date")
        elif args.check:
            print(f"{path} is stale: run `python -m purchase_contract write`", file=sys.stderr)
            return 1
        else:
            path.write_text(wanted, encoding="utf-8")
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
