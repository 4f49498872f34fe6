"""Settings a user gets wrong: named errors with the fix, and named jobs that keep their settings."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fdrmfl_pipeline.errors import ConfigError, MissingExtraError
from fdrmfl_pipeline.params import check_parameters

from ..conftest import PROJECT_ROOT


@pytest.mark.parametrize(
    ("tree", "needle"),
    [
        ({"trainng": {"federation": {"rounds": 3}}}, "'trainng' (did you mean 'training'?)"),
        ({"seeed": 7}, "'seeed' (did you mean 'seed'?)"),
        ({"training": {"optimizer": {"lrr": 0.1}}}, "'training.optimizer.lrr' (did you mean"),
        ({"training": {"rounds": 3}}, "'training.rounds'"),  # the pre-grouping layout
    ],
)
def test_a_misspelt_parameter_is_named_with_the_closest_name(tree, needle):
    with pytest.raises(ConfigError) as err:
        check_parameters(tree)
    assert needle in str(err.value)


def test_a_named_job_keeps_its_settings_when_the_seed_changes():
    """`kedro run --config job.yml --params seed=11` replaced the job's whole params string;
    experiments/run.py merges --seed and --params into the job's own parameters."""
    out = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "experiments/run.py"),
            "tecator_standard_fat",
            "--variant",
            "fdrmfl-pca-anchored",
            "--seed",
            "11",
            "--params",
            "training.federation.rounds=3",
            "--print",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith("kedro run --env tecator_standard ")
    for item in (
        "seed=11",
        "training.experimental.anchor_mu=10",
        "ingestion.tecator.modalities=",
        "training.federation.rounds=3",
        "regression.method=fdrmfl-pca-anchored",
    ):
        assert item in out, (item, out)


def test_the_flower_engine_without_its_extra_names_the_extra(monkeypatch):
    import importlib.util

    from fdrmfl_pipeline import engines

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "flwr" else real(name, *a)
    )
    with pytest.raises(MissingExtraError, match=r"flower-simulation needs the flower extra"):
        engines.require_flower("training.engine=flower-simulation")


def test_a_failed_run_ends_with_the_named_error(capsys):
    """Kedro wraps a dataset's error; the hook finds the project's error behind it and prints
    it as the last line after the traceback."""
    import sys

    from kedro.io.core import DatasetError

    from fdrmfl_pipeline.errors import StoredArtifactError
    from fdrmfl_pipeline.hooks import install_excepthook, named_error

    try:
        try:
            raise StoredArtifactError("cannot read x.parquet: delete it and rerun")
        except StoredArtifactError as inner:
            raise DatasetError("Failed while loading data from dataset") from inner
    except DatasetError as exc:
        wrapped = exc
    assert isinstance(named_error(wrapped), StoredArtifactError)
    assert named_error(ValueError("plain")) is None
    saved = sys.excepthook
    try:
        sys.excepthook = lambda *a: None  # the usual traceback printer
        install_excepthook()
        sys.excepthook(type(wrapped), wrapped, wrapped.__traceback__)
    finally:
        sys.excepthook = saved
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "Error (StoredArtifactError): cannot read x.parquet: delete it and rerun"
