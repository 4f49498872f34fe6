"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

# The default run: every stage that exists, in data-flow order.
DEFAULT_CHAIN = (
    "ingestion",
    "partitioning",
    "training",
    "regression",
    "baselines",
    "evaluation",
    "reporting",
)


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines; ``__default__`` is the whole chain."""
    # every node tagged with its stage: kedro-viz's sidebar and `kedro run --tags` group by it
    pipelines = {name: p.tag(name) for name, p in find_pipelines(raise_errors=True).items()}
    pipelines["__default__"] = sum(
        (pipelines[name] for name in DEFAULT_CHAIN if name in pipelines), Pipeline([])
    )
    return pipelines
