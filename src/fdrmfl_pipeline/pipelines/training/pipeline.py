"""Training pipeline wiring."""

from kedro.pipeline import Node, Pipeline

from .nodes import extract_features, train_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=train_model,
                inputs={
                    "multimodal_dataset": "multimodal_dataset",
                    "client_assignments": "client_assignments",
                    "params": "params:training",
                    "seed": "params:seed",
                    "checkpoint_dir": "training_checkpoints",
                },
                outputs=["global_model", "training_history"],
                name="train_model",
            ),
            Node(
                func=extract_features,
                inputs={
                    "multimodal_dataset": "multimodal_dataset",
                    "client_assignments": "client_assignments",
                    "global_model": "global_model",
                    "params": "params:training",
                    "seed": "params:seed",
                },
                outputs="extracted_features",
                name="extract_features",
            ),
        ]
    )
