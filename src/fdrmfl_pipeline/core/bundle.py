"""The saved model bundle: architecture config (JSON), weights and scalers, no pickled classes."""

from __future__ import annotations

import json

import torch

from fdrmfl_pipeline.core.clientdata import Scaler
from fdrmfl_pipeline.core.model import FDRMFLModel, ModelConfig, build_model

FORMAT = "fdrmfl-model/1"


def make_bundle(
    config: ModelConfig,
    global_state: dict[str, torch.Tensor],
    scalers: dict[int, Scaler],
    client_states: dict[int, dict[str, torch.Tensor]] | None = None,
    meta: dict | None = None,
) -> dict:
    """A dict of tensors and strings, loadable with ``torch.load(weights_only=True)``."""
    return {
        "format": FORMAT,
        "config": config.to_json(),
        "state_dict": global_state,
        "scalers": json.dumps({str(c): s.to_dict() for c, s in scalers.items()}),
        "client_states": {str(c): s for c, s in (client_states or {}).items()},
        "meta": json.dumps(meta or {}),
    }


def load_model(bundle: dict, client: int | None = None) -> tuple[FDRMFLModel, dict[int, Scaler]]:
    """Rebuild the model (the global one, or ``client``'s own for the ``local`` strategy) and
    the scalers from a bundle, e.g. ``load_model(catalog.load("global_model"))``."""
    if bundle.get("format") != FORMAT:
        raise ValueError(f"not an {FORMAT} bundle (format={bundle.get('format')!r})")
    config = ModelConfig.from_json(bundle["config"])
    model = build_model(config, seed=0)
    states = bundle["client_states"]
    state = (
        states[str(client)]
        if client is not None and str(client) in states
        else bundle["state_dict"]
    )
    model.load_state_dict(state)
    model.eval()
    scalers = {int(c): Scaler.from_dict(d) for c, d in json.loads(bundle["scalers"]).items()}
    return model, scalers


DIVERGED_FIX = (
    "lower training.optimizer.lr, keep training.optimizer.grad_clip on, or check the clients' "
    "data (a client with very few training rows, or inputs on wildly different scales)"
)


def non_finite(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or inf."""
    return [
        k
        for k, v in state.items()
        if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]


def check_finite_state(state: dict[str, torch.Tensor], what: str) -> None:
    """Refuse to pass on a model with NaN / inf weights."""
    from fdrmfl_pipeline.errors import NonFiniteModelError

    bad = non_finite(state)
    if bad:
        raise NonFiniteModelError(
            f"{what} has NaN or infinite values in {len(bad)} of {len(state)} tensors "
            f"(first: {', '.join(bad[:3])}); nothing was saved. Fix: {DIVERGED_FIX}"
        )


def check_finite_bundle(bundle: dict) -> None:
    """Refuse to save a bundle whose global or per-client weights are not finite."""
    check_finite_state(bundle["state_dict"], "the model to save")
    for c, s in bundle.get("client_states", {}).items():
        check_finite_state(s, f"client {c}'s model to save")
