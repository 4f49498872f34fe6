"""Tuning pipeline: an Optuna study over the training parameters (validation data only)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
