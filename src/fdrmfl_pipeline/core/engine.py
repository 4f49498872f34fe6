"""The in-process federated engine: rounds, client sampling, FedAvg, retention, validation,
early stopping, checkpoints and history. Strategies share this one loop.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from fdrmfl_pipeline.core import aggregation
from fdrmfl_pipeline.core.client import (
    LOSS_TERMS,
    ClientUpdate,
    LocalTrainConfig,
    evaluate_mse,
    local_update,
    model_from_state,
)
from fdrmfl_pipeline.core.clientdata import ClientData, Scaler, pool_clients
from fdrmfl_pipeline.core.model import ModelConfig, build_model

logger = logging.getLogger(__name__)
State = dict[str, torch.Tensor]
STRATEGIES = ("fdrmfl", "fedavg", "fedprox", "moon", "local", "central")


@dataclass(frozen=True)
class FederationConfig:
    strategy: str = "fdrmfl"
    rounds: int = 5
    client_fraction: float = 1.0
    retention: float = 0.0
    early_stopping: bool = False
    patience: int = 3
    min_delta: float = 0.0
    seed: int = 42
    min_clients: int = 1  # a round needs at least this many answering clients


class FederationError(RuntimeError):
    """A round could not complete (too few clients answered)."""


class ClientRunner(Protocol):
    """How the server reaches its clients: in process, or through Flower messages."""

    def client_ids(self) -> list[int]: ...

    def n_train(self, client: int) -> int: ...

    def train(
        self,
        jobs: dict[int, State],
        round_: int,
        cfg: LocalTrainConfig,
        anchor: State | None = None,
    ) -> tuple[list[ClientUpdate], dict[int, str]]:
        """Each client in ``jobs`` trains from its given state (pulled toward ``anchor``, the
        warm start, when ``cfg.anchor_mu > 0``); returns the updates received and, for clients
        that did not answer, the reason."""
        ...

    def evaluate(self, states: dict[int, State]) -> dict[int, float]:
        """Validation MSE (original units) of each client's model on its ``val`` split."""
        ...

    def client_side_state(self) -> dict: ...

    def restore_client_side_state(self, state: dict) -> None: ...


class InProcessRunner:
    """All clients in this process; each keeps its previous local model (contrastive term)."""

    def __init__(
        self,
        model_config: ModelConfig,
        clients: dict[int, ClientData],
        scalers: dict[int, Scaler],
        seed: int,
    ):
        self.model_config, self.clients, self.scalers, self.seed = (
            model_config,
            clients,
            scalers,
            seed,
        )
        self.prev_states: dict[int, State] = {}

    def client_ids(self) -> list[int]:
        return sorted(self.clients)

    def n_train(self, client: int) -> int:
        return self.clients[client].train.n

    def train(self, jobs, round_, cfg, anchor=None):
        updates = []
        for c in sorted(jobs):
            upd, local_state = local_update(
                self.model_config,
                jobs[c],
                self.prev_states.get(c),
                self.clients[c],
                cfg,
                self.seed,
                round_,
                anchor,
            )
            self.prev_states[c] = local_state  # stays on the client
            updates.append(upd)
        return updates, {}

    def evaluate(self, states):
        out = {}
        for c in sorted(states):
            model = model_from_state(self.model_config, states[c])
            sc = self.scalers[c]
            out[c] = evaluate_mse(model, self.clients[c].val, sc.y_mean, sc.y_std)
        return out

    def client_side_state(self) -> dict:
        return {"prev_states": self.prev_states}

    def restore_client_side_state(self, state: dict) -> None:
        self.prev_states = state.get("prev_states", {})


def strategy_loss_config(strategy: str, cfg: LocalTrainConfig) -> LocalTrainConfig:
    """The loss terms each strategy keeps (same code, different weights)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy '{strategy}'; expected one of {STRATEGIES}")
    off = {"lambda_mi": 0.0, "lambda_kl": 0.0, "lambda_con": 0.0}
    if strategy == "fdrmfl":
        return replace(cfg, prox_mu=0.0)
    if strategy in ("fedavg", "local", "central"):
        return replace(cfg, prox_mu=0.0, **off)
    if strategy == "fedprox":
        return replace(cfg, **off)
    return replace(cfg, prox_mu=0.0, lambda_mi=0.0, lambda_kl=0.0)  # moon


@dataclass
class TrainingResult:
    global_state: State
    client_states: dict[int, State]  # 'local': each client's own model; else empty
    history: list[dict]
    best_round: int
    rounds_run: int


def _hash(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _state_digest(state: State) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _history_row(
    rnd: int, client: int, u: ClientUpdate | None, n_train: int, vals: dict[int, float]
) -> dict:
    """One (round, client) row of the training history; ``u`` None: the client did not train."""
    return {
        "round": rnd,
        "client": client,
        "participated": u is not None,
        "n_samples": n_train,
        "train_loss": u.metrics["train_loss"] if u else np.nan,
        **{f"loss_{t}": (u.metrics[f"train_{t}"] if u else np.nan) for t in LOSS_TERMS},
        "val_mse": vals.get(client, float("nan")),
        "seconds": u.metrics["seconds"] if u else 0.0,
    }


def _save_checkpoint(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def run_federated(
    model_config: ModelConfig,
    clients: dict[int, ClientData],
    scalers: dict[int, Scaler],
    local_cfg: LocalTrainConfig,
    fed: FederationConfig,
    checkpoint_path: Path | None = None,
    resume: bool = False,
    on_update: Callable[[ClientUpdate], None] | None = None,
    on_round_end: Callable[[int, float], None] | None = None,
    init_state: State | None = None,
) -> TrainingResult:
    """Run ``fed.rounds`` rounds of the chosen strategy with every client in this process."""
    names = [m.name for m in model_config.modalities]
    if fed.strategy == "central":
        clients = {-1: pool_clients(clients, names)}
        # the pooled split keeps each row's own scaling; report in the first client's units
        scalers = {-1: next(iter(scalers.values()))}
    runner = InProcessRunner(model_config, clients, scalers, fed.seed)
    return run_rounds(
        model_config,
        runner,
        local_cfg,
        fed,
        checkpoint_path,
        resume,
        on_update,
        on_round_end,
        init_state,
    )


def run_rounds(
    model_config: ModelConfig,
    runner: ClientRunner,
    local_cfg: LocalTrainConfig,
    fed: FederationConfig,
    checkpoint_path: Path | None = None,
    resume: bool = False,
    on_update: Callable[[ClientUpdate], None] | None = None,
    on_round_end: Callable[[int, float], None] | None = None,
    init_state: State | None = None,
) -> TrainingResult:
    """The server loop shared by every engine: sampling, FedAvg in client order, retention,
    validation, early stopping, checkpoints and history.

    ``on_update`` sees every :class:`ClientUpdate` the server receives (used to audit the
    privacy boundary); ``on_round_end(round, mean_val_mse)`` is called after each round's
    checkpoint (Optuna reports intermediate values and prunes through it). A round in which
    fewer than ``fed.min_clients`` sampled clients answer raises :class:`FederationError`; the
    checkpoint of the last completed round is kept.

    ``init_state`` (e.g. a federated PLS warm start) replaces the seeded random initialisation;
    it is then validated as "round 0", so early stopping can keep it if no round improves on it.
    With ``local_cfg.anchor_mu > 0`` every round's local training is pulled toward it (L2-SP).
    """
    cfg = strategy_loss_config(fed.strategy, local_cfg)
    ids = runner.client_ids()
    warm = init_state is not None
    if cfg.anchor_mu > 0 and not warm:
        raise ValueError(
            f"anchor_mu={cfg.anchor_mu} pulls the model toward a warm start, but none was given"
        )
    if init_state is None:
        init_state = build_model(model_config, seed=fed.seed).state_dict()
    global_state = {k: v.detach().clone() for k, v in init_state.items()}
    anchor = global_state if cfg.anchor_mu > 0 else None
    client_states: dict[int, State] = (
        {c: global_state for c in ids} if fed.strategy == "local" else {}
    )
    history: list[dict] = []
    best = (math.inf, 0, global_state, dict(client_states))
    stale = 0
    start_round = 1
    key = _hash(
        model_config.to_json(),
        asdict(cfg),
        asdict(fed),
        ids,
        [runner.n_train(c) for c in ids],
        _state_digest(global_state),
    )
    if resume and checkpoint_path is not None and checkpoint_path.exists():
        ck = torch.load(checkpoint_path, weights_only=False)
        if ck.get("key") != key:
            logger.warning(
                "Checkpoint %s belongs to another configuration: starting afresh", checkpoint_path
            )
        else:
            global_state, client_states = ck["global_state"], ck["client_states"]
            runner.restore_client_side_state(ck["client_side"])
            history, best, stale, start_round = (
                ck["history"],
                ck["best"],
                ck["stale"],
                ck["round"] + 1,
            )
            logger.info("Resuming from checkpoint %s after round %d", checkpoint_path, ck["round"])
    if start_round == 1 and warm:
        vals0 = runner.evaluate({c: global_state for c in ids})
        history.extend(_history_row(0, c, None, runner.n_train(c), vals0) for c in ids)
        finite0 = [v for v in vals0.values() if np.isfinite(v)]
        if finite0:
            best = (float(np.mean(finite0)), 0, global_state, dict(client_states))
            logger.info("round 0 (warm start): val_mse=%.5g", best[0])
    rnd = start_round - 1
    for rnd in range(start_round, fed.rounds + 1):
        t_round = time.perf_counter()
        if fed.strategy in ("local", "central"):
            selected = ids
        else:
            selected = aggregation.sample_clients(ids, fed.client_fraction, fed.seed, rnd)
        jobs = {
            c: (client_states[c] if fed.strategy == "local" else global_state) for c in selected
        }
        updates, failures = runner.train(jobs, rnd, cfg, anchor)
        for c, why in sorted(failures.items()):
            logger.error("round %d: client %d did not answer: %s", rnd, c, why)
        need = min(fed.min_clients, len(selected))
        if len(updates) < need:
            raise FederationError(
                f"round {rnd}: only {len(updates)} of {len(selected)} sampled clients answered "
                f"(failed: {sorted(failures)}), fewer than training.min_clients={fed.min_clients}; "
                f"the last good checkpoint (round {rnd - 1}) is kept"
                + (f" at {checkpoint_path}" if checkpoint_path else "")
            )
        updates = sorted(updates, key=lambda u: u.client_id)
        for upd in updates:
            if on_update is not None:
                on_update(upd)
            if fed.strategy == "local":
                client_states[upd.client_id] = upd.state
        if fed.strategy != "local":
            avg = aggregation.fedavg([(u.client_id, u.state, u.n_samples) for u in updates])
            global_state = aggregation.retain(avg, global_state, fed.retention)
        # validation of the new model(s) on every client's val split (original units)
        vals = runner.evaluate(
            {c: (client_states[c] if fed.strategy == "local" else global_state) for c in ids}
        )
        by_id = {u.client_id: u for u in updates}
        round_rows = []
        for c in ids:
            u = by_id.get(c)
            round_rows.append(_history_row(rnd, c, u, runner.n_train(c), vals))
        history.extend(round_rows)
        finite = [r["val_mse"] for r in round_rows if np.isfinite(r["val_mse"])]
        mean_val = float(np.mean(finite)) if finite else float("nan")
        terms = {
            t: np.nanmean([r[f"loss_{t}"] for r in round_rows]) for t in ("mse", "mi", "skl", "con")
        }
        logger.info(
            "round %d/%d strategy=%s clients=%s loss=%.4f mse=%.4f mi=%.4f skl=%.4f con=%.4f val_mse=%.5g (%.1fs)",
            rnd,
            fed.rounds,
            fed.strategy,
            [u.client_id for u in updates],
            np.nanmean([r["train_loss"] for r in round_rows]),
            terms["mse"],
            terms["mi"],
            terms["skl"],
            terms["con"],
            mean_val,
            time.perf_counter() - t_round,
        )
        if np.isfinite(mean_val) and mean_val < best[0] - fed.min_delta:
            best, stale = (mean_val, rnd, global_state, dict(client_states)), 0
        else:
            stale += 1
        stop = fed.early_stopping and stale >= fed.patience
        if checkpoint_path is not None:
            _save_checkpoint(
                checkpoint_path,
                {
                    "key": key,
                    "round": rnd,
                    "global_state": global_state,
                    "client_states": client_states,
                    "client_side": runner.client_side_state(),
                    "history": history,
                    "best": best,
                    "stale": stale,
                },
            )
        if on_round_end is not None:
            on_round_end(rnd, mean_val)
        if stop:
            logger.info(
                "Early stopping after round %d (best round %d, val_mse %.5g)", rnd, best[1], best[0]
            )
            break
    if fed.early_stopping and np.isfinite(best[0]):
        global_state, client_states = best[2], best[3]
        best_round = best[1]
    else:
        best_round = rnd
    return TrainingResult(global_state, client_states, history, best_round, rnd)
