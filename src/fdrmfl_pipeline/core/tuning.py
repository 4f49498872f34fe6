"""Optuna studies that can be rerun, resumed and shared by several workers.

* Storage: ``sqlite`` (a file per study, resumable), ``journal`` (a journal file: several worker
  processes on one machine) or any SQLAlchemy URL (e.g. PostgreSQL: workers on several machines).
* Exact budget: ``n_trials`` counts *finished* trials (complete or pruned) in the study, whoever
  ran them. Each worker asks for a trial and runs it only if fewer than ``n_trials`` earlier trials
  are finished or running; otherwise it records that surplus trial as failed and stops. Trial
  numbers are assigned atomically by the storage, so the study ends with exactly ``n_trials``
  finished trials and no duplicates.
* A hard-killed trial stays ``RUNNING`` in the storage; a rerun of a single-worker job marks it
  ``FAIL`` (user attribute ``interrupted``) before continuing, so it never counts as complete.
* The sampler is TPE seeded from (project seed, worker id, trials already in the study): the same
  job run twice from scratch gives the same trials, and a resumed job does not repeat earlier
  suggestions.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fdrmfl_pipeline.core import seeding
from fdrmfl_pipeline.errors import MissingExtraError, NonFiniteModelError, TuningError

logger = logging.getLogger(__name__)
FINISHED = ("COMPLETE", "PRUNED")


@dataclass(frozen=True)
class SearchEntry:
    name: str
    kind: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None

    def suggest(self, trial) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_categorical(self.name, list(self.choices))


def make_storage(spec: str, study_name: str, directory: Path):
    """``sqlite`` | ``journal`` | a SQLAlchemy URL -> an Optuna storage."""
    import optuna

    if spec == "sqlite":
        directory.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{(directory / f'{study_name}.db').resolve()}"
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    if spec == "journal":
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        directory.mkdir(parents=True, exist_ok=True)
        return JournalStorage(
            JournalFileBackend(str((directory / f"{study_name}.journal").resolve()))
        )
    if spec.startswith("env:"):
        name = spec[4:]
        if not os.environ.get(name):
            raise TuningError(
                f"tuning.storage reads the database URL from the environment variable {name}, "
                "which is not set"
            )
        spec = os.environ[name]
    if "://" in spec:
        return _database_storage(spec)
    raise ValueError(
        f"tuning.storage '{spec}' is not 'sqlite', 'journal', 'env:<VARIABLE>' or a database URL"
    )


CONNECT_TIMEOUT_S = 10  # a server that accepts TCP but never answers fails within this
STATEMENT_TIMEOUT_MS = 120_000


def redact(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def _database_storage(url: str):
    import optuna

    kwargs: dict = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        kwargs["connect_args"] = {
            "connect_timeout": CONNECT_TIMEOUT_S,
            "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
        }
    # several workers may create the schema at the same moment: retry the loser
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=kwargs, heartbeat_interval=10, grace_period=60
            )
        except ImportError as exc:  # Optuna re-raises the driver's ModuleNotFoundError
            cause = exc if isinstance(exc, ModuleNotFoundError) else exc.__cause__
            driver = getattr(cause, "name", None) or url.split("://", maxsplit=1)[0]
            raise MissingExtraError(
                f"the tuning storage {redact(url)} needs the database driver '{driver}': "
                "install the postgres extra (pip install -e '.[postgres]')"
            ) from exc
        except Exception as exc:  # sqlalchemy errors: unreachable, or concurrent schema creation
            text = str(exc)
            unreachable = "timeout" in text.lower() or "could not connect" in text.lower()
            if unreachable or attempt == 4:
                raise TuningError(
                    f"cannot use the tuning storage {redact(url)}: {type(exc).__name__}: "
                    f"{redact(text)[:300]}. Check that the database is up and reachable "
                    f"(connections time out after {CONNECT_TIMEOUT_S}s)"
                ) from exc
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


def make_pruner(kind: str, n_startup_trials: int, n_warmup_steps: int):
    import optuna

    if kind == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps
        )
    if kind == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"tuning.pruner '{kind}' is not 'median' or 'none'")


def fail_interrupted(study) -> int:
    """Mark every RUNNING trial FAIL (for a single-worker job restarted after a hard kill)."""
    from optuna.trial import TrialState

    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        n += 1
    if n:
        logger.warning(
            "Marked %d interrupted trial(s) of study '%s' as failed", n, study.study_name
        )
    return n


def _create_study(study_name: str, storage, **kw):
    """``create_study(load_if_exists=True)``, retried when two workers create it at once."""
    import optuna

    for attempt in range(5):
        try:
            return optuna.create_study(
                study_name=study_name,
                storage=storage,
                direction="minimize",
                load_if_exists=True,
                **kw,
            )
        except Exception:
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def run_study(
    objective: Callable[[Any], float],
    space: list[SearchEntry],
    study_name: str,
    storage,
    n_trials: int,
    seed: int,
    worker_id: int = 0,
    timeout: float | None = None,
    pruner=None,
    single_worker: bool = True,
    start_point: dict | None = None,
    max_failures_in_a_row: int = 10,
):
    """Run trials until the study holds ``n_trials`` finished trials (or ``timeout`` seconds).

    ``objective(trial)`` gets an Optuna trial whose parameters are already suggested (read them
    from ``trial.params``) and returns the value to minimise. ``start_point`` (e.g. the
    environment's current settings) is the first trial of a new study, so the best trial is
    never worse on the objective than the configuration it started from. A trial whose value
    is not finite, or whose training diverges, is marked failed; ``max_failures_in_a_row`` of
    them in a row stop the study with :class:`TuningError` quoting the first (failed trials do
    not count toward ``n_trials``, so a search space where nothing trains would run forever).
    """
    import optuna
    from optuna.trial import TrialState

    probe = optuna.create_study(
        study_name=study_name, storage=storage, direction="minimize", load_if_exists=True
    )
    if single_worker:
        fail_interrupted(probe)
    already = len(probe.get_trials(deepcopy=False))
    sampler = optuna.samplers.TPESampler(
        seed=seeding.derived_seed(seed, "optuna", worker_id, already)
    )
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction="minimize",
        load_if_exists=True,
        sampler=sampler,
        pruner=pruner,
    )
    if start_point and already == 0 and worker_id == 0:
        study.enqueue_trial(start_point, user_attrs={"start_point": True})
    start = time.monotonic()
    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    failures: list[str] = []  # the current run of failed trials

    def failed(trial, why: str) -> None:
        study.tell(trial, state=TrialState.FAIL)
        logger.warning("trial #%d failed: %s", trial.number, why)
        failures.append(f"trial #{trial.number} {trial.params}: {why}")
        if len(failures) >= max_failures_in_a_row:
            raise TuningError(
                f"study '{study_name}': {len(failures)} trials in a row failed, stopping. The "
                f"first: {failures[0]}. Check the search space (tuning.search_space) and the "
                "training settings"
            )

    while timeout is None or time.monotonic() - start < timeout:
        if len(study.get_trials(deepcopy=False, states=counted)) >= n_trials:
            break  # finished or being finished by another worker: no new trial needed
        trial = study.ask()
        earlier = sum(
            1 for t in study.get_trials(deepcopy=False, states=counted) if t.number < trial.number
        )
        if earlier >= n_trials:
            trial.set_user_attr("surplus", True)
            study.tell(trial, state=TrialState.FAIL)
            break
        for entry in space:
            entry.suggest(trial)
        t0 = time.monotonic()
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            failures.clear()
            study.tell(trial, state=TrialState.PRUNED)
            logger.info(
                "trial #%d pruned (%.1fs) %s", trial.number, time.monotonic() - t0, trial.params
            )
            continue
        except NonFiniteModelError as exc:
            failed(trial, str(exc).split(";")[0])
            continue
        except Exception:
            study.tell(trial, state=TrialState.FAIL)
            raise
        if not math.isfinite(value):
            failed(trial, f"non-finite value {value}")
            continue
        failures.clear()
        study.tell(trial, value)
        finished = len(
            study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        )
        logger.info(
            "trial #%d (%d/%d finished) value=%.5g best=%.5g (%.1fs) %s",
            trial.number,
            finished,
            n_trials,
            value,
            study.best_value,
            time.monotonic() - t0,
            trial.params,
        )
    return study


def trials_frame(study) -> pd.DataFrame:
    """One row per trial: number, state, value, params_<name>, duration, intermediate values."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value if t.value is not None else float("nan"),
                **{f"params_{k}": v for k, v in t.params.items()},
                "duration_s": t.duration.total_seconds()
                if t.duration is not None
                else float("nan"),
                "intermediate_values": json.dumps(
                    {str(k): v for k, v in sorted(t.intermediate_values.items())}
                ),
                "user_attrs": json.dumps(t.user_attrs, default=str),
            }
        )
    return pd.DataFrame(rows).sort_values("number").reset_index(drop=True)
