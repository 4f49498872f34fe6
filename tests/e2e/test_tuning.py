"""Tuning: validated search space, reproducible studies, no test data, resumable after a hard kill."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from fdrmfl_pipeline.core.modalities import to_arrow
from fdrmfl_pipeline.params import TrainingParams, TuningParams
from fdrmfl_pipeline.pipelines.tuning import nodes as tuning_nodes

from ..tiny import tiny_clients

LR, MI, DIM = "optimizer.lr", "loss.lambda_mi", "model.latent_dim"
SPACE = {
    MI: {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
    LR: {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    DIM: {"type": "int", "low": 2, "high": 6},
}
TRAIN = TrainingParams(
    warm_start={"kind": "none"},
    federation={"rounds": 2},
    optimizer={"local_epochs": 1, "batch_size": 16},
    model={"hidden_dim": 8, "latent_dim": 3},
)


def _params(**kw) -> TuningParams:
    return TuningParams.model_validate(
        {"study_name": "t", "n_trials": 3, "search_space": SPACE, "tune": None, **kw}
    )


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        (
            {MI: {"type": "float", "low": 2.0, "high": 1.0}},
            r"lambda_mi[\s\S]*low=2.0 is greater than high=1.0",
        ),
        (
            {"loss.lambda_kl": {"type": "float", "low": 0.0, "high": 1.0, "log": True}},
            r"lambda_kl[\s\S]*log scale needs a positive",
        ),
        ({"loss.lambda_typo": {"type": "float", "low": 0.1, "high": 1.0}}, r"lambda_typo"),
        ({"lambda_mi": {"type": "float", "low": 0.1, "high": 1.0}}, r"not tunable"),  # old name
        ({"loss.tau": {"type": "float", "low": 0.1}}, r"tau[\s\S]*needs 'low' and 'high'"),
        ({"optimizer.name": {"type": "categorical"}}, r"optimizer.name[\s\S]*choices"),
    ],
)
def test_malformed_search_space_entries_are_named(entry, needle):
    with pytest.raises(ValidationError, match=needle):
        TuningParams.model_validate({"search_space": entry})


def test_malformed_search_space_fails_before_any_trial(tmp_path):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from kedro.validation import ParameterValidationError

    from ..conftest import make_project

    project = make_project(tmp_path / "p")
    bootstrap_project(project)
    bad = {
        "tuning": {"search_space": {LR: {"type": "float", "low": -1.0, "high": 1.0, "log": True}}}
    }
    with (
        KedroSession.create(project_path=project, runtime_params=bad) as s,
        pytest.raises(ParameterValidationError, match=r"tuning[\s\S]*lr"),
    ):
        s.run(pipeline_names=["ingestion", "partitioning", "tuning"])
    assert not (project / "data/06_models/optuna").exists()


def _tune(tmp_path: Path, data=None, assign=None, **kw):
    if data is None:
        data, assign, *_ = tiny_clients()
    return tuning_nodes.tune(to_arrow(data), assign, _params(**kw), TRAIN, 0, tmp_path)


def test_same_job_twice_gives_the_same_trials(tmp_path):
    a, best_a = _tune(tmp_path / "a")
    b, best_b = _tune(tmp_path / "b")
    cols = [c for c in a.columns if c not in ("duration_s",)]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert best_a == best_b
    from fdrmfl_pipeline.best_params import flatten

    assert set(flatten(best_a["training"])) == set(SPACE)
    TRAIN.with_values(flatten(best_a["training"]))  # a valid training: block
    TrainingParams.model_validate(best_a["training"])
    assert (tmp_path / "a" / "t.db").exists()
    # intermediate values: one per round
    assert all(len(json.loads(v)) >= 1 for v in a["intermediate_values"])


def test_rerunning_a_finished_job_continues_the_same_study(tmp_path):
    first, _ = _tune(tmp_path)
    again, _ = _tune(tmp_path, n_trials=5)
    finished = again[again["state"].isin(["COMPLETE", "PRUNED"])]
    assert len(finished) == 5
    pd.testing.assert_frame_equal(again.iloc[:3][["number", "value"]], first[["number", "value"]])


def test_the_objective_never_reads_test_rows(tmp_path, monkeypatch):
    data, assign, *_ = tiny_clients()
    seen = []
    real = tuning_nodes.without_test_rows

    def spy(table, assignments):
        out_table, out_assign = real(table, assignments)
        seen.append((set(out_table.column("sample_id").to_pylist()), set(out_assign["split"])))
        return out_table, out_assign

    monkeypatch.setattr(tuning_nodes, "without_test_rows", spy)
    before, _ = _tune(tmp_path / "a", data, assign)
    test_ids = set(assign.loc[assign["split"] == "test", "sample_id"])
    assert seen and not (seen[0][0] & test_ids) and "test" not in seen[0][1]
    # poison the test rows (inputs and targets): every trial value stays bit-identical
    pos = np.flatnonzero(np.isin(data.sample_ids, list(test_ids)))
    for arr in data.arrays.values():
        arr[pos] = np.nan
    data.target[pos] = 1e6
    after, _ = _tune(tmp_path / "b", data, assign)
    np.testing.assert_array_equal(before["value"].to_numpy(), after["value"].to_numpy())


WORKER = textwrap.dedent(
    """
    import sys, time, math
    from pathlib import Path
    from fdrmfl_pipeline.core import tuning
    storage_spec, name, n_trials, slow_trial, marker, worker = sys.argv[1:7]
    n_trials, slow_trial, worker = int(n_trials), int(slow_trial), int(worker)
    space = [tuning.SearchEntry("x", "float", -3.0, 3.0), tuning.SearchEntry("y", "float", -3.0, 3.0)]
    def objective(trial):
        if trial.number == slow_trial:
            Path(marker).write_text(str(trial.number))
            time.sleep(60)
        time.sleep(0.02)
        return (trial.params["x"] - 1) ** 2 + math.sin(trial.params["y"])
    storage = tuning.make_storage(storage_spec, name, Path(marker).parent)
    tuning.run_study(objective, space, name, storage, n_trials, seed=1, worker_id=worker,
                     pruner=tuning.make_pruner("none", 0, 0), single_worker=storage_spec == "sqlite")
    """
)


def _worker(tmp_path: Path, storage: str, n_trials: int, slow_trial: int, worker: int = 0):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return subprocess.Popen(
        [
            sys.executable,
            str(script),
            storage,
            "study",
            str(n_trials),
            str(slow_trial),
            str(tmp_path / f"marker{worker}"),
            str(worker),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _trials(storage_obj):
    import optuna

    return optuna.load_study(study_name="study", storage=storage_obj).get_trials(deepcopy=False)


def test_sqlite_job_killed_mid_trial_resumes_without_loss_or_duplicates(tmp_path):
    from fdrmfl_pipeline.core import tuning

    proc = _worker(tmp_path, "sqlite", n_trials=6, slow_trial=3)
    deadline = time.monotonic() + 120
    while not (tmp_path / "marker0").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the worker never reached the slow trial"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # hard kill in the middle of trial 3
    proc.wait()
    storage = tuning.make_storage("sqlite", "study", tmp_path)
    before = {t.number: (t.state.name, t.value) for t in _trials(storage)}
    assert [before[i][0] for i in range(3)] == ["COMPLETE"] * 3 and before[3][0] == "RUNNING"

    (tmp_path / "marker0").unlink()
    rerun = _worker(tmp_path, "sqlite", n_trials=6, slow_trial=-1)
    assert rerun.wait(timeout=120) == 0, rerun.stderr.read().decode()[-2000:]
    after = _trials(storage)
    states = [t.state.name for t in after]
    assert states.count("COMPLETE") == 6  # exactly what was asked
    assert len({t.number for t in after}) == len(after)  # no duplicates
    assert after[3].state.name == "FAIL" and after[3].user_attrs.get("interrupted") is True
    for i in range(3):  # the completed trials survived untouched
        assert (after[i].state.name, after[i].value) == before[i]
    params = [tuple(sorted(t.params.items())) for t in after if t.state.name == "COMPLETE"]
    assert len(set(params)) == len(params)  # the resumed sampler did not repeat suggestions


def _postgres_bin() -> Path | None:
    import glob
    import shutil

    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    if dirs:
        return Path(dirs[0])
    try:  # the dev extra's pgserver wheel ships a PostgreSQL build
        import pgserver
    except ImportError:
        return None
    bindir = Path(pgserver.__file__).parent / "pginstall" / "bin"
    return bindir if (bindir / "initdb").exists() else None


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away PostgreSQL on 127.0.0.1: the system's (Debian's package, which .ci/run
    installs) or the one the dev extra's pgserver wheel ships."""
    import pwd
    import shutil
    import socket
    import tempfile

    pytest.importorskip("psycopg2", reason="psycopg2 missing: install the dev extras")
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip(
            "PostgreSQL is not installed and could not be installed (apt-get install postgresql)"
        )
    root = Path(tempfile.mkdtemp(prefix="fdrmfl-pg-", dir="/tmp"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a 'postgres' user to run the server as")
        shutil.chown(root, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    data = root / "data"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(
        [
            *prefix,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "fdrmfl",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
    subprocess.run(
        [
            *prefix,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            opts,
            "-l",
            str(root / "log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg2://fdrmfl@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


def test_two_processes_on_one_postgresql_study(tmp_path, postgres_url):
    from fdrmfl_pipeline.core import tuning

    n = 12
    procs = [_worker(tmp_path, postgres_url, n_trials=n, slow_trial=-1, worker=w) for w in (0, 1)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read().decode()[-3000:]
    trials = _trials(tuning.make_storage(postgres_url, "study", tmp_path))
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == n  # exactly what was asked, across both workers
    assert len({t.number for t in trials}) == len(trials)
    assert len({tuple(sorted(t.params.items())) for t in complete}) == n  # no duplicated work
    assert all(t.user_attrs.get("surplus") for t in trials if t.state.name == "FAIL")


def test_tune_narrows_the_shared_search_space_and_names_unknown_entries():
    p = _params(tune=[LR])
    assert [e.name for e in tuning_nodes.search_entries(p)] == [LR]
    with pytest.raises(ValidationError, match=r"lr_typo"):
        _params(tune=["lr_typo"])


def test_a_knob_the_strategy_ignores_is_named_before_the_study(tmp_path, caplog):
    """Tuning the MI weight under FedAvg would vary nothing: the job says so, by name."""
    fedavg = TRAIN.model_copy(update={"strategy": "fedavg"})
    p = _params(tune=[MI, LR])
    assert tuning_nodes.ineffective_entries(p, fedavg) == [MI]
    assert tuning_nodes.ineffective_entries(p, TRAIN) == []
    data, assign, *_ = tiny_clients()
    with caplog.at_level(logging.WARNING):
        tuning_nodes.tune(
            to_arrow(data), assign, _params(tune=[MI], n_trials=1), fedavg, 0, tmp_path
        )
    assert "loss.lambda_mi, which training.strategy 'fedavg' ignores" in caplog.text


def test_first_trial_is_the_environments_own_setting(tmp_path):
    trials, _ = _tune(tmp_path)
    first = trials.sort_values("number").iloc[0]
    assert first[f"params_{LR}"] == TRAIN.optimizer.lr
    assert first[f"params_{DIM}"] == TRAIN.model.latent_dim
    assert first[f"params_{MI}"] == TRAIN.loss.lambda_mi
    # a setting outside a tuned range is left to the sampler, not forced in
    narrow = {LR: {"type": "float", "low": 0.02, "high": 0.05}}
    assert tuning_nodes.start_point(_params(search_space=narrow, tune=None), TRAIN) == {}


def test_the_objective_starts_from_the_environments_warm_start(tmp_path):
    """With rounds=0 every trial is the federated PLS warm start alone: all values equal that
    start's validation MSE, which a random initialisation does not reach."""
    data, assign, clients, *_ = tiny_clients()
    warm = TRAIN.with_values({"warm_start.kind": "pls", "federation.rounds": 0})
    trials, _ = tuning_nodes.tune(
        to_arrow(data), assign, _params(tune=[LR]), warm, 0, tmp_path / "w"
    )
    values = trials.loc[trials["state"] == "COMPLETE", "value"].to_numpy()
    assert len(values) == 3 and np.ptp(values) == 0.0
    cold, _ = tuning_nodes.tune(
        to_arrow(data),
        assign,
        _params(tune=[LR]),
        TRAIN.with_values({"federation.rounds": 1}),
        0,
        tmp_path / "c",
    )
    assert values[0] < cold["value"].min()


def test_params_strings_round_trip_and_name_a_bad_item():
    from fdrmfl_pipeline.best_params import parse_params_string, to_params_string

    best = {
        "training": {
            "optimizer": {"lr": 0.0005},
            "loss": {"lambda_kl": 1e-05},
            "warm_start": {"kind": "pls"},
            "federation": {"rounds": 3},
        }
    }
    assert parse_params_string(to_params_string(best)) == best
    assert "training.loss.lambda_kl=0.00001" in to_params_string(best)
    with pytest.raises(ValueError, match="'training.lr' is not key=value"):
        parse_params_string("seed=1,training.lr")


def test_tuning_plots_show_the_trials_of_a_narrowed_study(tmp_path):
    """The study rebuilt for plotting declares only the tuned entries, so trials that carry a
    subset of the search space still appear (they used to be dropped: three empty plots)."""
    trials, _ = _tune(tmp_path, tune=[LR, MI])
    history, importances, slice_fig = tuning_nodes.plot_tuning(trials, _params(tune=[LR, MI]))
    points = sum(len(c.get_offsets()) for ax in history.axes for c in ax.collections)
    assert points >= 3  # one marker per complete trial (plus the best-value line)
    assert not any("no complete trial" in t.get_text() for t in history.texts)
    assert {ax.get_xlabel() for ax in slice_fig.axes} >= {LR, MI}
