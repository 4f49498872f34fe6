"""Evaluation pipeline wiring."""

from kedro.pipeline import Node, Pipeline

from .nodes import choose_regressors, compute_metrics


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
            ),
            Node(
                func=choose_regressors,
                inputs={
                    "evaluation_metrics": "evaluation_metrics",
                    "extracted_features": "extracted_features",
                    "params": "params:evaluation",
                },
                outputs="regressor_choice",
                name="choose_regressors",
            ),
        ]
    )
