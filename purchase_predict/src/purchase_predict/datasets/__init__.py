"""Project-specific Kedro datasets."""

from purchase_predict.datasets.raw_events import (
    RawEventsContractError,
    RawEventsDataset,
    RawEventsError,
)

__all__ = ["RawEventsContractError", "RawEventsDataset", "RawEventsError"]
