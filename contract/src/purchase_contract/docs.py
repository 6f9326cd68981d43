"""``docs/features.md``, generated from the feature list (``python -m purchase_contract write``)."""

from __future__ import annotations

from purchase_contract.events import RAW_COLUMNS
from purchase_contract.features import FEATURES, IDENTIFIERS, LABEL, example_session_json

HEADER = """\
<!-- Generated from contract/src/purchase_contract (features.py, events.py):
     edit those, then run `python -m purchase_contract write`. A test checks this file. -->
# Features

The model's input columns, in order: the API's request fields (`POST /predict`), the feature
columns of the primary table (which adds the identifiers {identifiers} and the label
`{label}`), and the columns the Kedro feature step computes (docs/data-contract.md says how).
"""


def feature_table() -> str:
    """The features as a Markdown table: name, type, accepted values, meaning."""
    rows = [
        "| column | type | accepted values | used by the model | meaning |",
        "|---|---|---|---|---|",
    ]
    for f in FEATURES:
        kind = f"{f.kind} (category)" if f.categorical else f.kind
        used = "yes" if f.model_input else "no (identifier)"
        rows.append(f"| `{f.name}` | {kind} | {f.bounds_text()} | {used} | {f.description} |")
    return "\n".join(rows) + "\n"


def definitions() -> str:
    """How the feature step computes each feature, one bullet a feature."""
    return "".join(f"- `{f.name}`: {f.definition}\n" for f in FEATURES)


def raw_event_table() -> str:
    """The raw event columns as a Markdown table."""
    rows = ["| column | kind | may be missing | meaning |", "|---|---|---|---|"]
    rows += [
        f"| `{c.name}` | {c.kind} | {'yes' if c.nullable else 'no'} | {c.description} |"
        for c in RAW_COLUMNS
    ]
    return "\n".join(rows) + "\n"


def features_markdown() -> str:
    """The whole of ``docs/features.md``."""
    identifiers = " and ".join(f"`{name}`" for name in IDENTIFIERS)
    example = example_session_json().rstrip("\n")
    return "\n".join(
        [
            HEADER.format(identifiers=identifiers, label=LABEL),
            feature_table(),
            "## How the feature step computes them\n",
            "For one pair (a session and a product it carted), from its raw events; the terms "
            "(pair, first cart event, session user) and the edge cases are in "
            "docs/data-contract.md.\n",
            definitions(),
            "## An example session\n",
            "The request body of the deploy's smoke test and of the examples in docs/api.md:\n",
            f"```json\n{example}\n```\n",
            "## Raw events\n",
            "The columns the feature step reads (REES46 layout); other columns are ignored.\n",
            raw_event_table(),
        ]
    )
