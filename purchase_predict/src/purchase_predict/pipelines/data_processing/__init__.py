"""Raw events -> primary table (one row per carted session-product pair), in Ibis."""

from purchase_predict.pipelines.data_processing.pipeline import create_pipeline

__all__ = ["create_pipeline"]
