"""Ingestion pipeline wiring."""

from kedro.pipeline import Node, Pipeline

from .nodes import build_multimodal_dataset


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=build_multimodal_dataset,
                inputs={
                    "params": "params:ingestion",
                    "seed": "params:seed",
                    "tecator_raw": "tecator_raw",
                    "corn_raw": "corn_raw",
                    "table_raw": "table_raw",
                    "task": "params:task",
                },
                outputs="multimodal_dataset",
                name="build_multimodal_dataset",
            )
        ]
    )
