"""The data_processing pipeline: validate the raw events, build the primary table."""

from kedro.pipeline import Node, Pipeline

from purchase_predict.pipelines.data_processing.nodes import build_primary_table, validate_events


def create_pipeline(**kwargs: object) -> Pipeline:
    """``raw_events`` -> ``primary@ibis``, executed by the backend of the catalog's connection."""
    return Pipeline(
        [
            Node(
                validate_events,
                inputs="raw_events",
                outputs="validated_events",
                name="validate_events",
            ),
            Node(
                build_primary_table,
                inputs="validated_events",
                outputs="primary@ibis",
                name="build_primary_table",
            ),
        ]
    )
