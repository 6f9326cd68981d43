"""purchase_predict: shop events to a purchase-probability model."""

__version__ = "0.1.0"
