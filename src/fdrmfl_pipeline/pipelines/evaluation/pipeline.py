"""Evaluation pipeline wiring."""

from kedro.pipeline import Node, Pipeline

from .nodes import compute_metrics


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=compute_metrics,
                inputs={
                    "predictions": "predictions",
                    "baseline_predictions": "baseline_predictions",
                    "params": "params:evaluation",
                    "strategy": "params:training.strategy",
                    "seed": "params:seed",
                },
                outputs="evaluation_metrics",
                name="compute_metrics",
            )
        ]
    )
