"""The feature list is consistent, and what is generated from it is up to date."""

from __future__ import annotations

import json

import pytest

from purchase_contract import __main__ as cli
from purchase_contract.docs import features_markdown
from purchase_contract.features import (
    CATEGORICAL_FEATURES,
    FEATURE_NAMES,
    FEATURES,
    IDENTIFIERS,
    LABEL,
    NUMERIC_FEATURES,
    PRIMARY_COLUMNS,
    ROW_KEY,
    example_session,
    feature,
)


def test_names_are_unique_and_the_primary_table_adds_identifiers_and_label() -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert (*FEATURE_NAMES, *IDENTIFIERS, LABEL) == PRIMARY_COLUMNS
    assert set(ROW_KEY) <= set(PRIMARY_COLUMNS)
    # Every model input is either a category or a number, never both.
    model_inputs = {f.name for f in FEATURES if f.model_input}
    assert set(CATEGORICAL_FEATURES) | set(NUMERIC_FEATURES) == model_inputs
    assert not set(CATEGORICAL_FEATURES) & set(NUMERIC_FEATURES)


@pytest.mark.parametrize("spec", FEATURES, ids=lambda f: f.name)
def test_every_example_is_inside_its_bounds(spec) -> None:
    value = example_session()[spec.name]
    if spec.kind == "text":
        assert isinstance(value, str)
        if spec.lowercase:
            assert value == value.strip().lower()
        return
    assert isinstance(value, int if spec.kind == "integer" else float)
    assert spec.minimum <= value
    assert value < spec.maximum if spec.maximum_exclusive else value <= spec.maximum


@pytest.mark.parametrize("spec", FEATURES, ids=lambda f: f.name)
def test_every_feature_says_how_it_is_computed(spec) -> None:
    # docs/features.md lists the definitions; docs/data-contract.md no longer repeats them.
    assert spec.definition.endswith(".") and len(spec.definition) > len(spec.name)
    assert f"- `{spec.name}`: {spec.definition}\n" in features_markdown()


def test_an_unknown_feature_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="known: product_id, brand"):
        feature("colour")


def test_generated_docs_are_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    # The committed docs/features.md is what `python -m purchase_contract write` writes.
    assert cli.main(["write", "--check"]) == 0, capsys.readouterr().err
    assert cli._generated_path().read_text(encoding="utf-8") == features_markdown()


def test_the_example_command_prints_a_session(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["example"]) == 0
    assert json.loads(capsys.readouterr().out) == example_session()
