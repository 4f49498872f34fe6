"""The in-process federated engine: rounds, client sampling, FedAvg, retention, validation,
early stopping, checkpoints and history. Strategies share this one loop.
"""

from __future__ import annotations

import hashlib
import json
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
from fdrmfl_pipeline.core.config import FederationConfig  # noqa: F401  (re-exported)
from fdrmfl_pipeline.core.model import ModelConfig, build_model
from fdrmfl_pipeline.core.privacy import poisson_sample, private_average

logger = logging.getLogger(__name__)
State = dict[str, torch.Tensor]
STRATEGIES = ("fdrmfl", "fedavg", "fedprox", "moon", "local", "central")


class FederationError(RuntimeError):
    """A round could not complete (too few clients answered)."""


@dataclass
class SummedUpdate:
    """What the server receives in a round under secure aggregation: sums over the clients
    that answered, never a client's own model or metrics."""

    clients: list[int]  # whose answers are in the sums (ascending)
    state: State  # their sample-weighted mean model
    n_samples: int
    metrics: dict[str, float]  # means over them (a non-finite metric counts as 0)


SUM_METRICS = ("train_loss", *(f"train_{t}" for t in LOSS_TERMS))


def client_answer(upd: ClientUpdate) -> dict[str, np.ndarray]:
    """A client's contribution to a secure round: its sample count, its float weights times
    that count, and its metrics (one vector layout for every client of the round)."""
    n = float(upd.n_samples)
    out = {"n": np.array([n])}
    for k, v in upd.state.items():
        if torch.is_floating_point(v):
            out[f"w.{k}"] = v.detach().cpu().numpy().astype(np.float64) * n
    for k in SUM_METRICS:
        x = float(upd.metrics.get(k, float("nan")))
        out[f"m.{k}"] = np.array([x if np.isfinite(x) else 0.0])
    return out


def summed_update(
    total: dict[str, np.ndarray], clients: list[int], template: State
) -> SummedUpdate:
    """The round's mean model and metrics from the summed :func:`client_answer` vectors;
    non-float tensors (counters) come from ``template``, the model the clients started from."""
    n = float(total["n"][0])
    if n <= 0:
        raise FederationError("secure aggregation: the answering clients hold no training rows")
    state = {
        k: (
            torch.from_numpy(np.asarray(total[f"w.{k}"]) / n).to(v.dtype).reshape(v.shape)
            if torch.is_floating_point(v)
            else v.clone()
        )
        for k, v in template.items()
    }
    metrics = {k: float(total[f"m.{k}"][0]) / len(clients) for k in SUM_METRICS}
    return SummedUpdate(sorted(clients), state, int(round(n)), metrics)


def val_answer(val_mse: float) -> np.ndarray:
    """A client's contribution to the secure mean validation error: (MSE, 1), or (0, 0) for a
    client without validation rows."""
    return np.array([val_mse, 1.0]) if np.isfinite(val_mse) else np.zeros(2)


def mean_from_val_sum(total: np.ndarray) -> float:
    return float(total[0] / total[1]) if total[1] > 0 else float("nan")


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

    def evaluate(self, states: dict[int, State], round_: int = 0) -> dict[int, float]:
        """Validation MSE (original units) of each client's model on its ``val`` split, with
        the modalities each client has after ``round_``."""
        ...

    def client_side_state(self) -> dict[str, dict[int, State]]:
        """What clients keep between rounds, for a checkpoint (weights only)."""
        ...

    def restore_client_side_state(self, state: dict[str, dict[int, State]]) -> None: ...


class InProcessRunner:
    """All clients in this process; each keeps its previous local model (contrastive term)."""

    def __init__(
        self,
        model_config: ModelConfig,
        clients: dict[int, ClientData],
        scalers: dict[int, Scaler],
        seed: int,
        fed: FederationConfig | None = None,
    ):
        self.model_config, self.clients, self.scalers, self.seed = (
            model_config,
            clients,
            scalers,
            seed,
        )
        self.prev_states: dict[int, State] = {}
        self.absent = (
            fed or FederationConfig()
        ).absent  # (client, round) -> modalities not yet had

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
                absent=self.absent(c, round_),
            )
            self.prev_states[c] = local_state  # stays on the client
            updates.append(upd)
        return updates, {}

    def evaluate(self, states, round_=0):
        out = {}
        for c in sorted(states):
            model = model_from_state(self.model_config, states[c])
            sc = self.scalers[c]
            out[c] = evaluate_mse(
                model, self.clients[c].val, sc.y_mean, sc.y_std, self.absent(c, round_)
            )
        return out

    def train_summed(self, jobs, round_, cfg, anchor=None):
        """Secure aggregation in one process: the same fixed-point sums as a masked Flower run
        (masks cancel exactly), so both engines give the same numbers for a seed."""
        from fdrmfl_pipeline.core.secagg import plain_sum_arrays

        updates, failures = self.train(jobs, round_, cfg, anchor)
        if len(updates) < 2:
            return None, failures
        total = plain_sum_arrays({u.client_id: client_answer(u) for u in updates})
        template = next(iter(jobs.values()))
        return summed_update(total, [u.client_id for u in updates], template), failures

    def evaluate_summed(
        self, state: State, clients: list[int], round_: int = 0
    ) -> tuple[float, list[int]]:
        """The mean over ``clients`` of their validation MSE, from the fixed-point sum."""
        from fdrmfl_pipeline.core.secagg import plain_sum

        vals = self.evaluate(dict.fromkeys(clients, state), round_)
        if len(vals) < 2:
            return float("nan"), []
        total = plain_sum({c: val_answer(v) for c, v in vals.items()})
        return mean_from_val_sum(total), sorted(vals)

    def data_digest(self) -> str:
        """A digest of every client's rows (a checkpoint of other data is never resumed)."""
        h = hashlib.sha256()
        for c in sorted(self.clients):
            for name, split in sorted(self.clients[c].splits.items()):
                h.update(f"{c}/{name}".encode())
                for k in sorted(split.x):
                    h.update(np.ascontiguousarray(split.x[k]).tobytes())
                h.update(np.ascontiguousarray(split.y).tobytes())
                h.update(np.ascontiguousarray(split.mask).tobytes())
        return h.hexdigest()[:16]

    def client_side_state(self) -> dict[str, dict[int, State]]:
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


def ignored_loss_settings(strategy: str) -> tuple[str, ...]:
    """The ``training.loss`` settings ``strategy`` ignores, read off :func:`strategy_loss_config`
    (the temperature goes with the contrastive weight)."""
    weights = ("lambda_mi", "lambda_kl", "lambda_con", "prox_mu")
    kept = strategy_loss_config(
        strategy, replace(LocalTrainConfig(), **dict.fromkeys(weights, 1.0))
    )
    out = [w for w in weights if getattr(kept, w) == 0.0]
    return tuple(out + ["tau"] if "lambda_con" in out else out)


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


def jsonable(v):
    """``json.dumps(default=...)`` for numpy values in histories and metadata."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"cannot write {type(v).__name__} to JSON")


def checkpoint_round(path: Path) -> int | None:
    """The last completed round recorded in a checkpoint's JSON sidecar (None: no checkpoint)."""
    try:
        return int(json.loads(path.with_suffix(".json").read_text())["round"])
    except (OSError, ValueError, KeyError):
        return None


def _save_checkpoint(path: Path, tensors: dict, meta: dict) -> None:
    """Weights as a tensors-only file (loadable with ``weights_only=True``), everything else as
    JSON; both renamed into place, the JSON last, and both carry the round so a torn pair is
    detected on resume."""
    from fdrmfl_pipeline.errors import CheckpointError

    path.parent.mkdir(parents=True, exist_ok=True)
    side = path.with_suffix(".json")
    tmps = [
        path.with_suffix(f".{os.getpid()}.pt.tmp"),
        side.with_suffix(f".{os.getpid()}.json.tmp"),
    ]
    try:
        torch.save({**tensors, "round": torch.tensor(meta["round"])}, tmps[0])
        os.replace(tmps[0], path)
        tmps[1].write_text(json.dumps(meta, default=jsonable))
        os.replace(tmps[1], side)
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(
            f"cannot write the round {meta['round']} checkpoint {path}: "
            f"{type(exc).__name__}: {str(exc)[:200]} (disk full or a file-size limit?). The "
            "previous checkpoint is kept; free space or move data/06_models/checkpoints, then "
            "rerun with training.resume=true"
        ) from exc
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)


def _load_checkpoint(path: Path) -> tuple[dict, dict] | None:
    """(tensors, meta) of a checkpoint, or None when it is missing or torn. Never unpickles:
    the tensors are loaded with ``weights_only=True``."""
    import pickle

    from fdrmfl_pipeline.errors import CheckpointError, describe_load_failure

    side = path.with_suffix(".json")
    if not (path.exists() and side.exists()):
        return None
    try:
        meta = json.loads(side.read_text())
        tensors = torch.load(path, weights_only=True)  # refuses pickled objects: no code runs
    except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise CheckpointError(
            f"cannot resume from {path}: it is not a weights-only checkpoint written by this "
            f"project ({describe_load_failure(exc)}). Nothing was loaded or run; "
            "delete it (and its .json) or run with training.resume=false"
        ) from exc
    if int(tensors.get("round", torch.tensor(-1))) != int(meta.get("round", -2)):
        logger.warning("Checkpoint %s and %s disagree on the round: ignored", path, side)
        return None
    return tensors, meta


def _by_client(states: dict[int, State]) -> dict[str, State]:
    return {str(c): s for c, s in states.items()}


def _from_client(states: dict[str, State]) -> dict[int, State]:
    return {int(c): s for c, s in states.items()}


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
    runner = InProcessRunner(model_config, clients, scalers, fed.seed, fed)
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


@dataclass
class _Progress:
    """The server's state between rounds (what a checkpoint holds)."""

    global_state: State
    client_states: dict[int, State]  # 'local' only
    history: list[dict]
    best: tuple[float, int, State, dict[int, State]]  # (val MSE, round, global, clients)
    stale: int = 0
    last_round: int = 0


def _checkpoint_key(model_config, cfg, fed, runner: ClientRunner, ids, start: State) -> str:
    """What a checkpoint must match to be resumed: the model, the loss and federation settings,
    the clients and their sizes, a digest of their data and of the start weights."""
    digest = getattr(runner, "data_digest", None)
    return _hash(
        model_config.to_json(),
        asdict(cfg),
        asdict(fed),
        ids,
        [runner.n_train(c) for c in ids],
        digest() if digest is not None else "",
        _state_digest(start),
    )


def _resume(path: Path, key: str, runner: ClientRunner, progress: _Progress) -> _Progress:
    """The checkpointed progress when it belongs to this run, else ``progress`` unchanged."""
    loaded = _load_checkpoint(path)
    if loaded is None:
        return progress
    tensors, meta = loaded
    if meta.get("key") != key:
        logger.warning(
            "Checkpoint %s belongs to another configuration or other data: starting afresh", path
        )
        return progress
    runner.restore_client_side_state(
        {k: _from_client(v) for k, v in tensors["client_side"].items()}
    )
    best = (
        float(meta["best_value"]),
        int(meta["best_round"]),
        tensors["best_global"],
        _from_client(tensors["best_clients"]),
    )
    logger.info("Resuming from checkpoint %s after round %d", path, meta["round"])
    return _Progress(
        tensors["global_state"],
        _from_client(tensors["client_states"]),
        meta["history"],
        best,
        int(meta["stale"]),
        int(meta["round"]),
    )


def _write_checkpoint(path: Path, key: str, runner: ClientRunner, progress: _Progress) -> None:
    side = runner.client_side_state()
    _save_checkpoint(
        path,
        {
            "global_state": progress.global_state,
            "client_states": _by_client(progress.client_states),
            "client_side": {k: _by_client(v) for k, v in side.items()},
            "best_global": progress.best[2],
            "best_clients": _by_client(progress.best[3]),
        },
        {
            "key": key,
            "round": progress.last_round,
            "history": progress.history,
            "best_value": progress.best[0],
            "best_round": progress.best[1],
            "stale": progress.stale,
        },
    )


def _validate_start(
    runner: ClientRunner, ids: list[int], progress: _Progress, secure: bool = False
) -> None:
    """A warm start is validated as round 0, so early stopping can keep it."""
    if secure:
        mean0, judged = runner.evaluate_summed(progress.global_state, ids)
        vals0 = dict.fromkeys(judged, mean0)
    else:
        vals0 = runner.evaluate(dict.fromkeys(ids, progress.global_state))
    progress.history.extend(_history_row(0, c, None, runner.n_train(c), vals0) for c in ids)
    finite0 = [v for v in vals0.values() if np.isfinite(v)]
    if finite0:
        progress.best = (
            float(np.mean(finite0)),
            0,
            progress.global_state,
            dict(progress.client_states),
        )
        logger.info("round 0 (warm start): val_mse=%.5g", progress.best[0])


def _train_round(
    runner: ClientRunner,
    cfg: LocalTrainConfig,
    fed: FederationConfig,
    ids: list[int],
    rnd: int,
    progress: _Progress,
    anchor: State | None,
    checkpoint_path: Path | None,
) -> list[ClientUpdate]:
    """Sample clients, send each its start, and return the updates in client order; too few
    answers raise :class:`FederationError`."""
    local = fed.strategy == "local"
    online = ids if fed.strategy == "central" else fed.online(ids, rnd)
    if fed.strategy in ("local", "central"):
        selected = online
    elif fed.dp.mode == "central":  # Poisson sampling: what the accountant assumes
        selected = poisson_sample(ids, fed.dp.sample_rate, fed.seed, rnd)
    elif not online:
        selected = []
    else:
        selected = aggregation.sample_clients(online, fed.client_fraction, fed.seed, rnd)
    if len(online) < len(ids):
        logger.info("round %d: %d of %d clients online", rnd, len(online), len(ids))
    jobs = {c: (progress.client_states[c] if local else progress.global_state) for c in selected}
    updates, failures = runner.train(jobs, rnd, cfg, anchor)
    for c, why in sorted(failures.items()):
        logger.error("round %d: client %d did not answer: %s", rnd, c, why)
    need = min(fed.min_clients, len(selected))
    if len(updates) < need:
        raise FederationError(
            f"round {rnd}: only {len(updates)} of {len(selected)} sampled clients answered "
            f"(failed: {sorted(failures)}), fewer than "
            f"training.federation.min_clients={fed.min_clients}; "
            f"the last good checkpoint (round {rnd - 1}) is kept"
            + (f" at {checkpoint_path}" if checkpoint_path else "")
        )
    return sorted(updates, key=lambda u: u.client_id)


def _aggregate(
    fed: FederationConfig, updates: list[ClientUpdate], progress: _Progress, n_clients: int
) -> None:
    """FedAvg in client order with server-side retention ('local': each keeps its own), or the
    clipped, noised average under differential privacy; a model with NaN / inf weights stops
    the run (:class:`NonFiniteModelError`)."""
    from fdrmfl_pipeline.core.bundle import check_finite_state

    if fed.dp.mode == "central":
        rnd = progress.last_round + 1
        new, info = private_average(
            progress.global_state,
            [(u.client_id, u.state) for u in updates],
            fed.dp,
            n_clients,
            fed.seed,
            rnd,
        )
        progress.global_state = aggregation.retain(new, progress.global_state, fed.retention)
        logger.info(
            "round %d: private aggregate of %d clients (mean update norm %.4g, %.0f %% clipped "
            "at %g)",
            rnd,
            int(info["dp_clients"]),
            info["dp_norm_mean"],
            100 * info["dp_clipped_share"] if info["dp_clients"] else 0.0,
            fed.dp.clip,
        )
        check_finite_state(progress.global_state, f"round {rnd}: the private aggregate")
        return

    if not updates:
        logger.warning(
            "round %d: no client took part; the model is unchanged", progress.last_round + 1
        )
        return
    if fed.strategy == "local":
        for upd in updates:
            check_finite_state(
                upd.state, f"round {progress.last_round + 1}: client {upd.client_id}'s model"
            )
            progress.client_states[upd.client_id] = upd.state
        return
    avg = aggregation.fedavg([(u.client_id, u.state, u.n_samples) for u in updates])
    progress.global_state = aggregation.retain(avg, progress.global_state, fed.retention)
    check_finite_state(
        progress.global_state, f"round {progress.last_round + 1}: the aggregated model"
    )


def _validate_round(
    runner: ClientRunner,
    fed: FederationConfig,
    ids: list[int],
    rnd: int,
    updates: list[ClientUpdate],
    progress: _Progress,
    seconds: float,
) -> float:
    """Validate the new model(s) on every client's val split (original units), append the
    round's history rows, log the round and keep the best round; returns the mean val MSE."""
    local = fed.strategy == "local"
    if fed.dp.enabled:  # a client's validation error would be a release the accountant omits
        vals = dict.fromkeys(ids, float("nan"))
    else:  # an offline client cannot answer: validate on the clients online this round
        online = ids if fed.strategy == "central" else fed.online(ids, rnd)
        vals = runner.evaluate(
            {c: (progress.client_states[c] if local else progress.global_state) for c in online},
            rnd,
        )
    by_id = {u.client_id: u for u in updates}
    rows = [_history_row(rnd, c, by_id.get(c), runner.n_train(c), vals) for c in ids]
    if fed.dp.enabled:  # the privacy spent so far, by the same accountant
        eps = fed.dp.spent(rnd)
        rows = [{**r, "epsilon": eps, "delta": fed.dp.delta} for r in rows]
    progress.history.extend(rows)
    finite = [r["val_mse"] for r in rows if np.isfinite(r["val_mse"])]
    mean_val = float(np.mean(finite)) if finite else float("nan")
    terms = {
        t: _finite_mean([r[f"loss_{t}"] for r in rows]) for t in ("mse", "ce", "mi", "skl", "con")
    }
    task_term = "ce" if terms["ce"] > 0 else "mse"  # a classifier's cross-entropy, or the MSE
    logger.info(
        "round %d/%d strategy=%s clients=%s loss=%.4f %s=%.4f mi=%.4f skl=%.4f con=%.4f val_mse=%.5g (%.1fs)",
        rnd,
        fed.rounds,
        fed.strategy,
        [u.client_id for u in updates],
        _finite_mean([r["train_loss"] for r in rows]),
        task_term,
        terms[task_term],
        terms["mi"],
        terms["skl"],
        terms["con"],
        mean_val,
        seconds,
    )
    _track_best(progress, fed, rnd, mean_val)
    return mean_val


def _track_best(progress: _Progress, fed: FederationConfig, rnd: int, mean_val: float) -> None:
    """Keep the round with the lowest mean validation MSE; a round without one (no client has
    validation rows) is not judged, so early stopping never cuts a run it cannot evaluate."""
    if not np.isfinite(mean_val):
        return
    if mean_val < progress.best[0] - fed.min_delta:
        progress.best = (mean_val, rnd, progress.global_state, dict(progress.client_states))
        progress.stale = 0
    else:
        progress.stale += 1


def _secure_round(
    runner,
    cfg: LocalTrainConfig,
    fed: FederationConfig,
    ids: list[int],
    rnd: int,
    progress: _Progress,
    anchor: State | None,
    checkpoint_path: Path | None,
) -> float:
    """One round under secure aggregation: the server gets the sample-weighted mean model and
    the mean validation error over the clients that answered, nothing per client. The history
    rows carry those means for every client that took part."""
    from fdrmfl_pipeline.core.bundle import check_finite_state
    from fdrmfl_pipeline.core.secagg import MIN_SURVIVORS

    t0 = time.perf_counter()
    online = fed.online(ids, rnd)
    selected = (
        aggregation.sample_clients(online, fed.client_fraction, fed.seed, rnd) if online else []
    )
    need = max(fed.min_clients, MIN_SURVIVORS)
    if len(selected) < need:
        raise FederationError(
            f"round {rnd}: {len(selected)} client(s) selected, but secure aggregation needs at "
            f"least {need} (training.federation.min_clients={fed.min_clients}; a sum of one "
            "answer would reveal it)"
        )
    summed, failures = runner.train_summed(
        dict.fromkeys(selected, progress.global_state), rnd, cfg, anchor
    )
    for c, why in sorted(failures.items()):
        logger.error("round %d: client %d did not answer: %s", rnd, c, why)
    answered = summed.clients if summed is not None else []
    if summed is None or len(answered) < need:
        raise FederationError(
            f"round {rnd}: only {len(answered)} of {len(selected)} sampled clients answered "
            f"(failed: {sorted(failures)}), fewer than {need} (secure aggregation and "
            f"training.federation.min_clients={fed.min_clients}); the last good checkpoint "
            f"(round {rnd - 1}) is kept" + (f" at {checkpoint_path}" if checkpoint_path else "")
        )
    progress.global_state = aggregation.retain(summed.state, progress.global_state, fed.retention)
    check_finite_state(progress.global_state, f"round {rnd}: the securely aggregated model")
    evaluators = [c for c in online if c not in failures]
    mean_val, judged = runner.evaluate_summed(progress.global_state, evaluators, rnd)
    # every client that took part shows the round's means (the server has nothing per client)
    shared = ClientUpdate(-1, {}, 0, {**summed.metrics, "seconds": 0.0})
    vals = dict.fromkeys(judged, mean_val)
    rows = [
        _history_row(rnd, c, shared if c in answered else None, runner.n_train(c), vals)
        for c in ids
    ]
    progress.history.extend(rows)
    logger.info(
        "round %d/%d strategy=%s secure sum of clients=%s loss=%.4f val_mse=%.5g (%.1fs)",
        rnd,
        fed.rounds,
        fed.strategy,
        answered,
        summed.metrics["train_loss"],
        mean_val,
        time.perf_counter() - t0,
    )
    _track_best(progress, fed, rnd, mean_val)
    return mean_val


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
    """The server loop shared by every engine: resume, then per round train (sampling),
    aggregate (FedAvg in client order, retention), validate (history, best round), checkpoint;
    early stopping keeps the best round.

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
    unknown = sorted({c for c, _, _ in fed.schedule} - set(ids))
    if unknown and fed.strategy != "central":
        from fdrmfl_pipeline.errors import ConfigError

        raise ConfigError(
            f"training.federation.availability.schedule names client(s) {unknown}, but the "
            f"clients are {ids}"
        )
    warm = init_state is not None
    if cfg.anchor_mu > 0 and not warm:
        raise ValueError(
            f"anchor_mu={cfg.anchor_mu} pulls the model toward a warm start, but none was given"
        )
    if init_state is None:
        init_state = build_model(model_config, seed=fed.seed).state_dict()
    start = {k: v.detach().clone() for k, v in init_state.items()}
    anchor = start if cfg.anchor_mu > 0 else None
    clients0: dict[int, State] = dict.fromkeys(ids, start) if fed.strategy == "local" else {}
    progress = _Progress(start, clients0, [], (math.inf, 0, start, dict(clients0)))
    key = _checkpoint_key(model_config, cfg, fed, runner, ids, start)
    if resume and checkpoint_path is not None:
        progress = _resume(checkpoint_path, key, runner, progress)
    if progress.last_round == 0 and warm:
        _validate_start(runner, ids, progress, fed.secure)
    for rnd in range(progress.last_round + 1, fed.rounds + 1):
        t_round = time.perf_counter()
        if fed.secure:  # the server sees sums only: no per-client update to audit
            mean_val = _secure_round(runner, cfg, fed, ids, rnd, progress, anchor, checkpoint_path)
        else:
            updates = _train_round(runner, cfg, fed, ids, rnd, progress, anchor, checkpoint_path)
            if on_update is not None:
                for upd in updates:
                    on_update(upd)
            _aggregate(fed, updates, progress, len(ids))
            mean_val = _validate_round(
                runner, fed, ids, rnd, updates, progress, time.perf_counter() - t_round
            )
        progress.last_round = rnd
        if checkpoint_path is not None:
            _write_checkpoint(checkpoint_path, key, runner, progress)
        if on_round_end is not None:
            on_round_end(rnd, mean_val)
        if fed.early_stopping and progress.stale >= fed.patience:
            logger.info(
                "Early stopping after round %d (best round %d, val_mse %.5g)",
                rnd,
                progress.best[1],
                progress.best[0],
            )
            break
    if fed.early_stopping and np.isfinite(progress.best[0]):
        best = progress.best
        return TrainingResult(best[2], best[3], progress.history, best[1], progress.last_round)
    return TrainingResult(
        progress.global_state,
        progress.client_states,
        progress.history,
        progress.last_round,
        progress.last_round,
    )


def _finite_mean(values: list[float]) -> float:
    """The mean of the finite values; NaN (without numpy's empty-slice warning) when a round
    has none, e.g. no client trained in it."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")
