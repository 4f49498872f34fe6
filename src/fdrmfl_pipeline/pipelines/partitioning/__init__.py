"""Partitioning: ``multimodal_dataset`` -> ``client_assignments`` and ``partition_summary``."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
