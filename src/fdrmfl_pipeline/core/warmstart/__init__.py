"""Federated warm starts of the linear paths and the head: PLS, PCA and lasso, all from
aggregated client answers (:mod:`.protocol`)."""

from fdrmfl_pipeline.core.warmstart.protocol import (
    AggregateOracle,
    ClientAggregates,
    InProcessOracle,
    PLSFit,
    WarmStartConfig,
    design,
    warm_start_state,
)

__all__ = [
    "AggregateOracle",
    "ClientAggregates",
    "InProcessOracle",
    "PLSFit",
    "WarmStartConfig",
    "design",
    "warm_start_state",
]
