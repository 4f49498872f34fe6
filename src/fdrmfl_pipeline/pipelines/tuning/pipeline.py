"""Tuning pipeline wiring."""

from kedro.pipeline import Node, Pipeline

from .nodes import plot_tuning, tune


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=tune,
                inputs={
                    "multimodal_dataset": "multimodal_dataset",
                    "client_assignments": "client_assignments",
                    "params": "params:tuning",
                    "training": "params:training",
                    "seed": "params:seed",
                    "optuna_dir": "optuna_studies",
                },
                outputs=["tuning_trials", "best_params"],
                name="tune",
            ),
            Node(
                func=plot_tuning,
                inputs=["tuning_trials", "params:tuning"],
                outputs=["optuna_history_plot", "optuna_importances_plot", "optuna_slice_plot"],
                name="plot_tuning",
            ),
        ]
    )
