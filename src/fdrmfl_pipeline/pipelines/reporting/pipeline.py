"""Reporting pipeline wiring."""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    build_report,
    plot_loss_curves,
    plot_metric_bars,
    plot_pred_vs_actual,
    plot_z_projection,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(plot_loss_curves, "training_history", "loss_curves_plot", name="plot_loss_curves"),
            Node(
                plot_pred_vs_actual,
                ["predictions", "regressor_choice", "params:reporting"],
                "pred_vs_actual_plot",
                name="plot_pred_vs_actual",
            ),
            Node(
                plot_metric_bars,
                ["evaluation_metrics", "regressor_choice", "params:reporting"],
                "metric_bars_plot",
                name="plot_metric_bars",
            ),
            Node(
                plot_z_projection,
                "extracted_features",
                "z_projection_plot",
                name="plot_z_projection",
            ),
            Node(
                build_report,
                {
                    "evaluation_metrics": "evaluation_metrics",
                    "regressor_choice": "regressor_choice",
                    "training_history": "training_history",
                    "predictions": "predictions",
                    "extracted_features": "extracted_features",
                    "client_assignments": "client_assignments",
                    "multimodal_dataset": "multimodal_dataset",
                    "parameters": "parameters",
                    "params": "params:reporting",
                    "anomaly_metrics": "anomaly_metrics",
                },
                "run_report",
                name="build_report",
            ),
        ]
    )
