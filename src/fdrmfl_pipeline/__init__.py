"""fdrmfl_pipeline: federated, task-driven multi-modal feature extraction for regression."""

__version__ = "0.1.0"
