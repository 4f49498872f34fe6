"""Kedro pipelines: thin adapters over :mod:`fdrmfl_pipeline.core`."""
