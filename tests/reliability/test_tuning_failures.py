"""Tuning that cannot make progress stops with a named error instead of running forever."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from fdrmfl_pipeline.core import tuning
from fdrmfl_pipeline.core.tuning import SearchEntry, make_storage, run_study
from fdrmfl_pipeline.errors import MissingExtraError, NonFiniteModelError, TuningError

SPACE = [SearchEntry("optimizer.lr", "float", 1.0, 10.0, False, None)]


def _run(tmp_path, objective, n_trials=5, **kw):
    storage = make_storage("sqlite", "s", tmp_path)
    return run_study(objective, SPACE, "s", storage, n_trials, 0, **kw)


def test_every_trial_failing_stops_after_a_bounded_run_quoting_the_first(tmp_path):
    calls = []

    def nan_objective(trial):
        calls.append(trial.number)
        return float("nan")

    with pytest.raises(
        TuningError, match=r"4 trials in a row failed.*first: trial #0 .*non-finite"
    ):
        _run(tmp_path, nan_objective, n_trials=20, max_failures_in_a_row=4)
    assert calls == [0, 1, 2, 3]


def test_a_diverged_trial_is_a_failed_trial_not_a_crash(tmp_path):
    def objective(trial):
        if trial.number % 2 == 0:
            raise NonFiniteModelError("round 1: the aggregated model has NaN; nothing was saved")
        return trial.params["optimizer.lr"]

    study = _run(tmp_path, objective, n_trials=3, max_failures_in_a_row=2)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 3 and states.count("FAIL") == 3  # failures interleaved


class _Silent:
    """A loopback server that accepts TCP connections and never answers."""

    def __enter__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.conns, self.stop = [], False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()
        return self.sock.getsockname()[1]

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                continue

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join(2)
        for c in self.conns:
            c.close()
        self.sock.close()


def test_a_database_that_never_answers_fails_within_the_connect_timeout(tmp_path, monkeypatch):
    pytest.importorskip("psycopg2", reason="the postgres driver comes with the dev extra")
    monkeypatch.setattr(tuning, "CONNECT_TIMEOUT_S", 2)
    with _Silent() as port:
        t0 = time.monotonic()
        url = f"postgresql+psycopg2://optuna:s3cret@127.0.0.1:{port}/optuna"
        with pytest.raises(TuningError, match="cannot use the tuning storage") as err:
            make_storage(url, "s", tmp_path)
        assert time.monotonic() - t0 < 30
    assert "s3cret" not in str(err.value) and "optuna:***@" in str(err.value)


def test_a_database_url_without_its_driver_names_the_extra(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "psycopg2", None)  # as if the extra were not installed
    with pytest.raises(MissingExtraError, match=r"postgres extra"):
        make_storage("postgresql+psycopg2://u:p@127.0.0.1:1/db", "s", tmp_path)


def test_the_storage_url_can_come_from_the_environment(tmp_path, monkeypatch):
    with pytest.raises(TuningError, match="FDRMFL_OPTUNA_URL, which is not set"):
        make_storage("env:FDRMFL_OPTUNA_URL", "s", tmp_path)
    monkeypatch.setenv("FDRMFL_OPTUNA_URL", f"sqlite:///{tmp_path / 'from_env.db'}")
    storage = make_storage("env:FDRMFL_OPTUNA_URL", "s", tmp_path)
    study = run_study(lambda t: t.params["optimizer.lr"], SPACE, "s", storage, 2, 0)
    assert len(study.trials) == 2 and (tmp_path / "from_env.db").exists()
