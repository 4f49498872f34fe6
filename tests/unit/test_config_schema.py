"""One home per default: conf/base states every parameter with the schema's default, the core's
dataclasses agree with both, and unknown keys are rejected."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from pydantic import BaseModel

from fdrmfl_pipeline.params import ProjectParams, check_parameters, unknown_keys

from ..conftest import PROJECT_ROOT

# research knobs that serve one experiment: in the schema (off) but not in the documented base
EXPERIMENTAL = {"training.experimental", "regression.experimental"}


def _base_tree() -> dict:
    tree: dict = {}
    for path in sorted((PROJECT_ROOT / "conf/base").glob("parameters*.yml")):
        tree.update(yaml.safe_load(path.read_text()) or {})
    return tree


def _schema_tree(model: BaseModel, prefix: str = "") -> dict:
    out = {}
    for name in type(model).model_fields:
        path = f"{prefix}{name}"
        if path in EXPERIMENTAL:
            continue
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            out[name] = _schema_tree(value, f"{path}.")
        elif isinstance(value, dict):
            out[name] = {k: _normalise(v) for k, v in value.items()}
        else:
            out[name] = value.model_dump() if isinstance(value, BaseModel) else value
    return out


def _normalise(v):
    if isinstance(v, dict):
        return {str(k): _normalise(x) for k, x in v.items()}
    if isinstance(v, BaseModel):
        return _normalise(v.model_dump())
    if isinstance(v, list | tuple):
        return [_normalise(x) for x in v]
    return v


def _diff(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a:
                out.append(f"{path}{k}: missing from conf/base")
            elif k not in b:
                out.append(f"{path}{k}: not in the schema")
            else:
                out += _diff(a[k], b[k], f"{path}{k}.")
        return out
    return [] if a == b else [f"{path[:-1]}: conf/base {a!r} vs schema {b!r}"]


def test_base_yaml_states_every_parameter_with_the_schemas_default():
    base = _base_tree()
    # the seed lives in parameters.yml; paths live in globals.yml (not parameters)
    schema = _schema_tree(ProjectParams())
    schema.pop("paths")
    from fdrmfl_pipeline.params import SearchEntryParams

    # a search-space entry in YAML may leave out its unused fields (choices, log: false)
    space = base["tuning"]["search_space"]
    base["tuning"]["search_space"] = {
        k: SearchEntryParams.model_validate(v).model_dump() for k, v in space.items()
    }
    assert _diff(_normalise(base), _normalise(schema)) == []


def test_core_dataclass_defaults_agree_with_the_schema():
    """The core's dataclasses (used directly by tests and library callers) default to what a
    Kedro run would use."""
    from fdrmfl_pipeline.core.client import LocalTrainConfig
    from fdrmfl_pipeline.core.engine import FederationConfig
    from fdrmfl_pipeline.core.partition import PartitionOptions
    from fdrmfl_pipeline.core.warmstart import WarmStartConfig

    p = ProjectParams()
    t = p.training
    local = LocalTrainConfig()
    assert (local.local_epochs, local.batch_size, local.optimizer) == (
        t.optimizer.local_epochs,
        t.optimizer.batch_size,
        t.optimizer.name,
    )
    assert (local.lr, local.weight_decay, local.grad_clip) == (
        t.optimizer.lr,
        t.optimizer.weight_decay,
        t.optimizer.grad_clip,
    )
    for k in ("lambda_mi", "lambda_kl", "lambda_con", "tau", "prox_mu", "lambda_l1"):
        assert getattr(local, k) == getattr(t.loss, k), k
    assert local.anchor_mu == t.experimental.anchor_mu
    fed = FederationConfig()
    f = t.federation
    assert (fed.strategy, fed.rounds, fed.client_fraction, fed.retention, fed.min_clients) == (
        t.strategy,
        f.rounds,
        f.client_fraction,
        f.retention,
        f.min_clients,
    )
    assert (fed.early_stopping, fed.patience, fed.min_delta) == (
        f.early_stopping.enabled,
        f.early_stopping.patience,
        f.early_stopping.min_delta,
    )
    assert fed.seed == p.seed
    ws = WarmStartConfig()
    assert dataclasses.asdict(ws) == {
        "kind": t.warm_start.kind,
        "components": t.warm_start.components,
        "pca_iterations": t.warm_start.pca_iterations,
        "lasso_penalties": t.warm_start.lasso_penalties,
        "lasso_iterations": t.warm_start.lasso_iterations,
        "gram_limit": t.warm_start.gram_limit,
    }
    assert dataclasses.asdict(PartitionOptions()) == dataclasses.asdict(p.partitioning.options())


@pytest.mark.parametrize(
    ("tree", "needle"),
    [
        ({"trainng": {}}, "'trainng' (did you mean 'training'?)"),
        ({"seeed": 1}, "'seeed' (did you mean 'seed'?)"),
        ({"training": {"loss": {"lambda_m": 1}}}, "'training.loss.lambda_m' (did you mean"),
        ({"partitioning": {"dirichlet": {"alfa": 1}}}, "'partitioning.dirichlet.alfa'"),
    ],
)
def test_unknown_keys_are_named_with_the_closest_known_name(tree, needle):
    from fdrmfl_pipeline.errors import ConfigError

    assert any(needle.split(" (")[0] in u for u in unknown_keys(tree))
    with pytest.raises(ConfigError) as err:
        check_parameters(tree)
    assert needle in str(err.value)


def test_free_form_maps_are_not_checked_as_groups():
    """Encoders, table modalities, missing-modality maps and the search space hold user names."""
    tree = {
        "training": {"model": {"encoders": {"anything": "mlp"}}},
        "ingestion": {"table": {"modalities": {"my_sensor": {"pattern": "s_.*"}}}},
        "tuning": {"search_space": {"loss.lambda_mi": {"low": 0.1, "high": 1.0}}},
    }
    assert unknown_keys(tree) == []
