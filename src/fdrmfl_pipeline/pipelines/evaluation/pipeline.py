"""Evaluation pipeline wiring."""

from kedro.pipeline import Node, Pipeline

from .nodes import choose_regressors, compute_metrics, score_anomalies


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
                    "task": "params:task",
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
            Node(
                func=score_anomalies,
                inputs={
                    "extracted_features": "extracted_features",
                    "multimodal_dataset": "multimodal_dataset",
                    "client_assignments": "client_assignments",
                    "params": "params:evaluation",
                    "task": "params:task",
                    "seed": "params:seed",
                },
                outputs=["anomaly_scores", "anomaly_metrics"],
                name="score_anomalies",
            ),
        ]
    )
