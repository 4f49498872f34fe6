"""Partitioning pipeline wiring."""

from kedro.pipeline import Node, Pipeline

from .nodes import assign_clients, export_client_files, plot_client_targets, summarise_partition


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=assign_clients,
                inputs={
                    "multimodal_dataset": "multimodal_dataset",
                    "params": "params:partitioning",
                    "seed": "params:seed",
                },
                outputs="client_assignments",
                name="assign_clients",
            ),
            Node(
                func=summarise_partition,
                inputs=["client_assignments", "multimodal_dataset"],
                outputs="partition_summary",
                name="summarise_partition",
            ),
            Node(
                func=plot_client_targets,
                inputs=["client_assignments", "multimodal_dataset"],
                outputs="client_targets_plot",
                name="plot_client_targets",
            ),
            Node(
                func=export_client_files,
                inputs=["multimodal_dataset", "client_assignments", "params:partitioning"],
                outputs="client_files",
                name="export_client_files",
            ),
        ]
    )
