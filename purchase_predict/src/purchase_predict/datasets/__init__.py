"""Project-specific Kedro datasets."""

from purchase_predict.datasets.raw_events import RawEventsDataset, RawEventsError

__all__ = ["RawEventsDataset", "RawEventsError"]
