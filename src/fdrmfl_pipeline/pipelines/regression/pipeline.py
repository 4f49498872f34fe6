"""Regression pipeline wiring."""

from kedro.pipeline import Node, Pipeline

from .nodes import predict_from_features


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=predict_from_features,
                inputs={
                    "extracted_features": "extracted_features",
                    "params": "params:regression",
                    "strategy": "params:training.strategy",
                    "seed": "params:seed",
                    "task": "params:task",
                },
                outputs="predictions",
                name="predict_from_features",
            )
        ]
    )
