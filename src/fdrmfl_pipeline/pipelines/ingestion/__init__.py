"""Ingestion: raw sources -> the canonical ``multimodal_dataset``."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
