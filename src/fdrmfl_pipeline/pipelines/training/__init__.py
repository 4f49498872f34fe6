"""Training: federated FDRMFL (and baseline strategies) -> model, history, extracted features."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
