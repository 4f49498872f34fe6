"""The experiments registry (``experiments/registry.yml``) as Python: which environment and
parameters make an experiment, a variant or a tuned run. Every script under ``experiments/``
builds its Kedro runtime parameters here, so a table row, a tuning study and a named job of the
same experiment run the same configuration."""

from __future__ import annotations

import copy
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "experiments"
RESULTS = HERE / "results"
TUNED = RESULTS / "tuned"
SHARED_CORN = ROOT.parent / "shared" / "datasets" / "corn"
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")


# the committed raw data every run may read (corn is never committed: --corn-dir points at it)
COMMITTED_RAW = ("tecator", "example_sites", "example_classification", "example_anomaly")


def project_copy(tmp: Path) -> Path:
    """This project's configuration and committed raw data in ``tmp`` (no conf/local): a run
    there never touches the real data/ folder, and a change to conf/ during a long grid does
    not reach cells already started."""
    shutil.copy(ROOT / "pyproject.toml", tmp)
    shutil.copytree(ROOT / "conf", tmp / "conf", ignore=shutil.ignore_patterns("local"))
    (tmp / "conf/local").mkdir()
    (tmp / "src").mkdir(exist_ok=True)
    for name in COMMITTED_RAW:
        shutil.copytree(ROOT / "data/01_raw" / name, tmp / "data/01_raw" / name)
    return tmp


def latest(project: Path, rel: str):
    """The newest version of the versioned Parquet dataset at ``rel`` in ``project``."""
    import pandas as pd

    return pd.read_parquet(sorted((project / rel).glob("*/*"))[-1])


@dataclass(frozen=True)
class Experiment:
    name: str
    env: str
    params: dict = field(default_factory=dict)
    baselines: dict = field(default_factory=dict)
    metric: str = "mse"  # mse: mean over clients of the test MSE; rmse_pooled: over all rows
    bound: float | None = None
    ref: tuple[str, float | None] = ("-", None)
    anchor: tuple[str, float] | None = None
    default: bool = True

    @property
    def needs_corn(self) -> bool:
        return self.env == "paper_corn"


def merge(a: dict, b: dict) -> dict:
    """``b`` over ``a``, nested dictionaries merged key by key (copies, inputs untouched)."""
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load(path: Path = HERE / "registry.yml") -> dict[str, Any]:
    """The raw registry."""
    return yaml.safe_load(path.read_text())


_REG = load()
VARIANTS: dict[str, dict] = _REG["variants"]
DEFAULT_VARIANTS: list[str] = _REG["default_variants"]
QUICK_VARIANTS: list[str] = _REG["quick_variants"]
FDRMFL_CONFIGS: tuple[str, ...] = tuple(_REG["fdrmfl_configs"])
FEDERATED_CONFIGS: tuple[str, ...] = (*FDRMFL_CONFIGS, *_REG["warm_start_configs"])


def method_params(env: str) -> dict:
    """The parameters that make ``env`` run the published method (FDRMFL with the protocol's
    weights) where the environment's own default is what validation preferred instead."""
    return copy.deepcopy((_REG.get("method") or {}).get(env) or {})


def published(env: str) -> dict:
    """Only the training settings of :func:`method_params`: for scripts that run an environment
    directly and must train FDRMFL as published (the grids' 'fdrmfl' rows)."""
    return {"training": method_params(env).get("training", {})}


def _experiment(name: str, e: dict) -> Experiment:
    target = e.get("target") or {}
    ref = e.get("ref") or {}
    anchor = e.get("anchor")
    return Experiment(
        name=name,
        env=e["env"],
        params=merge(method_params(e["env"]), e.get("params") or {}),
        baselines=_REG["baselines"][e["baselines"]] if "baselines" in e else {},
        metric=target.get("metric", "mse"),
        bound=target.get("bound"),
        ref=(ref.get("text", "-"), ref.get("divisor")),
        anchor=(anchor[0], float(anchor[1])) if anchor else None,
        default=e.get("default", True),
    )


EXPERIMENTS: dict[str, Experiment] = {n: _experiment(n, e) for n, e in _REG["experiments"].items()}
DEFAULT_EXPERIMENTS = [n for n, e in EXPERIMENTS.items() if e.default]


def tuning_params(name: str, trials: int | None = None) -> tuple[str, list[str], dict]:
    """(environment, pipelines, runtime parameters) of the experiment's tuning job: its study is
    ``tune_<experiment>`` and holds the protocol's number of finished trials (or ``trials``)."""
    e = experiment(name)
    env, params = run_params(name)
    n = trials if trials is not None else _REG["tuning_trials"][e.env]
    params = merge(params, {"tuning": {"study_name": f"tune_{name}", "n_trials": n}})
    return env, ["ingestion", "partitioning", "tuning"], params


def experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise SystemExit(f"unknown experiment '{name}'; registry.yml has {sorted(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def tuning_study(name: str) -> dict | None:
    """The experiment's stored tuning result (``experiments/tune.py``), if any."""
    path = TUNED / f"{name}.yml"
    return yaml.safe_load(path.read_text()) if path.exists() else None


def tuned_overrides(name: str) -> dict | None:
    """The ``training:`` values the experiment's study chose; None when there is no study or
    its best trial is trial 0, the environment's own values (training again would repeat the
    ``fdrmfl`` run exactly)."""
    study = tuning_study(name)
    if study is None or study.get("study", {}).get("best_trial") == 0:
        return None
    return dict(study["training"])


def variant_overrides(exp: str, variant: str) -> dict:
    """The parameters a variant changes (nested ``training:`` / ``regression:`` blocks)."""
    if variant not in VARIANTS:
        raise SystemExit(f"unknown variant '{variant}'; registry.yml has {sorted(VARIANTS)}")
    if variant == "fdrmfl-tuned":
        tuned = tuned_overrides(exp)
        return {"training": tuned} if tuned else {}
    return copy.deepcopy(VARIANTS[variant])


def run_params(
    exp: str,
    variant: str = "fdrmfl",
    seed: int | None = None,
    corn_dir: Path | str | None = None,
    extra: dict | None = None,
) -> tuple[str, dict]:
    """(Kedro environment, runtime parameters) of one experiment and variant: the registry's
    parameters, the variant's overrides, the experiment label, the method label and the seed."""
    e = experiment(exp)
    params = merge(e.params, variant_overrides(exp, variant))
    params = merge(
        params,
        {"evaluation": {"experiment": exp}, "regression": {"method": variant}},
    )
    if seed is not None:
        params["seed"] = seed
    if corn_dir is not None:
        params = merge(params, {"paths": {"corn_dir": str(corn_dir)}})
    return e.env, merge(params, extra or {})
