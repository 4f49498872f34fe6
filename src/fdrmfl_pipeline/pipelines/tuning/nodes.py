"""Tuning nodes: run the study (validation MSE only; test rows are removed first), then plot."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fdrmfl_pipeline.params import TrainingParams, TuningParams

logger = logging.getLogger(__name__)


def without_test_rows(
    multimodal_dataset: pa.Table, client_assignments: pd.DataFrame
) -> tuple[pa.Table, pd.DataFrame]:
    """Drop every ``test`` sample from both inputs: tuning never sees them."""
    kept = client_assignments[client_assignments["split"] != "test"].reset_index(drop=True)
    mask = pc.is_in(
        multimodal_dataset.column("sample_id"), value_set=pa.array(kept["sample_id"].astype(str))
    )
    return multimodal_dataset.filter(mask), kept


def search_entries(params: TuningParams) -> list:
    from fdrmfl_pipeline.core.tuning import SearchEntry

    names = params.tune if params.tune is not None else list(params.search_space)
    return [
        SearchEntry(name, e.type, e.low, e.high, e.log, tuple(e.choices) if e.choices else None)
        for name in names
        for e in [params.search_space[name]]
    ]


def ineffective_entries(params: TuningParams, training: TrainingParams) -> list[str]:
    """Tuned entries the training strategy ignores (e.g. ``loss.lambda_mi`` under FedAvg): their
    trials would vary nothing."""
    from fdrmfl_pipeline.core.engine import ignored_loss_settings

    ignored = {f"loss.{k}" for k in ignored_loss_settings(training.strategy)}
    return [e.name for e in search_entries(params) if e.name in ignored]


def start_point(params: TuningParams, training: TrainingParams) -> dict:
    """The environment's current value of every tuned parameter that lies inside its range."""
    point = {}
    for entry in search_entries(params):
        value = training.value(entry.name)
        if entry.kind == "categorical":
            inside = value in (entry.choices or ())
        else:
            inside = value is not None and entry.low <= value <= entry.high
        if inside:
            point[entry.name] = value
    return point


def nest(values: dict[str, Any]) -> dict:
    """``{"loss.lambda_mi": 0.1}`` -> ``{"loss": {"lambda_mi": 0.1}}`` (a ``training:`` block)."""
    out: dict = {}
    for path, v in sorted(values.items()):
        node = out
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def mean_val_mse(history: list[dict], rnd: int) -> float:
    """Mean over clients of round ``rnd``'s validation MSE (the tuning objective)."""
    rows = [r for r in history if r["round"] == rnd and np.isfinite(r["val_mse"])]
    return float(np.mean([r["val_mse"] for r in rows])) if rows else float("nan")


def tune(
    multimodal_dataset: pa.Table,
    client_assignments: pd.DataFrame,
    params: TuningParams,
    training: TrainingParams,
    seed: int,
    optuna_dir: Path,
) -> tuple[pd.DataFrame, dict]:
    """Optimise the mean validation MSE over clients; returns all trials and the best parameters
    (as a ``training:`` block the training pipeline takes directly)."""
    import optuna

    from fdrmfl_pipeline.core import tuning
    from fdrmfl_pipeline.core.engine import run_federated
    from fdrmfl_pipeline.core.modalities import from_arrow
    from fdrmfl_pipeline.core.setup import TrainingSetup

    idle = ineffective_entries(params, training)
    if idle:
        logger.warning(
            "tuning.tune names %s, which training.strategy '%s' ignores: those trials vary "
            "nothing; drop them from tuning.tune or tune another strategy",
            ", ".join(idle),
            training.strategy,
        )
    table, assignments = without_test_rows(multimodal_dataset, client_assignments)
    data = from_arrow(table)
    base = TrainingSetup.from_params(training, seed, data)
    base.setup_torch()
    clients, scalers = base.clients(data, assignments, seed)
    starts: dict[str, Any] = {}  # warm starts, computed once per model shape

    def warm_start(setup: TrainingSetup):
        key = repr((setup.model, setup.warm_start))  # the model shape and the warm start
        if key not in starts:
            starts[key] = setup.initial_state(clients, seed)
        return starts[key]

    def objective(trial: optuna.Trial) -> float:
        setup = TrainingSetup.from_params(training.with_values(trial.params), seed, data)

        def report(rnd: int, val: float) -> None:
            trial.report(val, rnd)
            if trial.should_prune():
                raise optuna.TrialPruned

        res = run_federated(
            setup.model,
            clients,
            scalers,
            setup.local,
            setup.federation,
            on_round_end=report,
            init_state=warm_start(setup),
        )
        return mean_val_mse(res.history, res.best_round)

    storage = tuning.make_storage(params.storage, params.study_name, Path(optuna_dir))
    study = tuning.run_study(
        objective,
        search_entries(params),
        params.study_name,
        storage,
        params.n_trials,
        seed,
        worker_id=params.worker_id,
        timeout=params.timeout,
        pruner=tuning.make_pruner(
            params.pruner, params.pruner_startup_trials, params.pruner_warmup_rounds
        ),
        single_worker=params.storage == "sqlite",
        start_point=start_point(params, training),
        max_failures_in_a_row=params.max_failures_in_a_row,
    )
    trials = tuning.trials_frame(study)
    complete = trials[trials["state"] == "COMPLETE"]
    if complete.empty:
        best = {"training": {}, "study": {"name": params.study_name, "best_value": None}}
    else:
        b = study.best_trial
        values = {k: (v.item() if hasattr(v, "item") else v) for k, v in b.params.items()}
        best = {
            "training": nest(values),
            "study": {
                "name": params.study_name,
                "best_trial": b.number,
                "best_value": float(b.value),
                "finished_trials": int(trials["state"].isin(["COMPLETE", "PRUNED"]).sum()),
            },
        }
    logger.info("Study '%s': %s", params.study_name, json.dumps(best["study"]))
    return trials, best


def _study_from_trials(tuning_trials: pd.DataFrame, params: TuningParams):
    """An in-memory study rebuilt from the saved trials (for Optuna's plots)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    dists = {}
    for entry in search_entries(params):  # the tuned entries: what the trials carry
        name, e = entry.name, params.search_space[entry.name]
        if e.type == "float":
            dists[name] = FloatDistribution(e.low, e.high, log=e.log)
        elif e.type == "int":
            dists[name] = IntDistribution(int(e.low), int(e.high), log=e.log)
        else:
            dists[name] = CategoricalDistribution(e.choices)
    study = optuna.create_study(direction="minimize")
    complete = tuning_trials[tuning_trials["state"] == "COMPLETE"]
    for d in complete.to_dict(orient="records"):  # not itertuples: dotted names are renamed
        trial_params = {
            k[len("params_") :]: d[k]
            for k in d
            if k.startswith("params_") and k[len("params_") :] in dists
        }
        if len(trial_params) != len(dists):
            continue
        trial_params = {
            k: (int(v) if isinstance(dists[k], IntDistribution) else v)
            for k, v in trial_params.items()
        }
        study.add_trial(
            optuna.trial.create_trial(
                params=trial_params,
                distributions=dists,
                value=float(d["value"]),
                intermediate_values={
                    int(k): v for k, v in json.loads(d["intermediate_values"]).items()
                },
            )
        )
    return study


def _placeholder(text: str) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3))
    fig.text(0.5, 0.5, text, ha="center", va="center")
    return fig


def plot_tuning(tuning_trials: pd.DataFrame, params: TuningParams) -> tuple[Any, Any, Any]:
    """Optimisation history, parameter importances and a slice plot (Optuna's matplotlib plots)."""
    import optuna
    from optuna.visualization import matplotlib as ovm

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _study_from_trials(tuning_trials, params)
    n = len(study.trials)
    if n == 0:
        return (_placeholder("no complete trial yet"),) * 3
    history = ovm.plot_optimization_history(study).figure
    importances = (
        ovm.plot_param_importances(study).figure
        if n >= 2
        else _placeholder("importances need 2+ trials")
    )
    sl = ovm.plot_slice(study)
    slice_fig = (sl.flat[0] if hasattr(sl, "flat") else sl).figure
    for fig in (history, importances, slice_fig):
        fig.set_size_inches(max(fig.get_size_inches()[0], 6), max(fig.get_size_inches()[1], 3.5))
    return history, importances, slice_fig
