"""Baselines pipeline wiring."""

from kedro.pipeline import Node, Pipeline

from .nodes import baseline_predictions


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=baseline_predictions,
                inputs={
                    "multimodal_dataset": "multimodal_dataset",
                    "client_assignments": "client_assignments",
                    "params": "params:baselines",
                    "training": "params:training",
                    "seed": "params:seed",
                },
                outputs="baseline_predictions",
                name="baseline_predictions",
            )
        ]
    )
