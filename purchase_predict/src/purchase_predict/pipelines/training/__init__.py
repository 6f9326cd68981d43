"""Training pipeline: primary table -> tuned LightGBM Pipeline logged and registered in MLflow."""

from purchase_predict.pipelines.training.pipeline import create_pipeline

__all__ = ["create_pipeline"]
