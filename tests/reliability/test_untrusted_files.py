"""Files a user or a colleague might hand over: nothing loaded may run code, and a job may not
write outside its folder."""

from __future__ import annotations

import json

import pytest

from fdrmfl_pipeline.core.client import LocalTrainConfig
from fdrmfl_pipeline.core.engine import FederationConfig, run_federated
from fdrmfl_pipeline.errors import CheckpointError, StoredArtifactError, UnsafePathError

from ..tiny import tiny_clients

CFG = LocalTrainConfig(local_epochs=1, batch_size=16)
FED = FederationConfig(strategy="fedavg", rounds=1, seed=0)


def test_a_crafted_checkpoint_is_refused_and_runs_no_code(tmp_path, crafted):
    _, _, clients, scalers, config = tiny_clients()
    ck = tmp_path / "checkpoints" / "fedavg.pt"
    marker = crafted(ck)
    ck.with_suffix(".json").write_text(json.dumps({"round": 1, "key": "x"}))
    with pytest.raises(CheckpointError, match=r"not a weights-only checkpoint.*delete it"):
        run_federated(config, clients, scalers, CFG, FED, checkpoint_path=ck, resume=True)
    assert not marker.exists()
    assert ck.exists()  # refused, not deleted: nothing the user wrote is lost


def test_a_crafted_model_version_is_refused_and_runs_no_code(tmp_path, crafted):
    from fdrmfl_pipeline.datasets import TorchModelDataset

    version = tmp_path / "global_model.pt" / "2026-01-01T00.00.00.000Z" / "global_model.pt"
    marker = crafted(version)
    from kedro.io.core import DatasetError, Version

    with pytest.raises(DatasetError) as err:  # Kedro wraps a dataset's load error
        TorchModelDataset(str(tmp_path / "global_model.pt"), version=Version(None, None)).load()
    assert isinstance(err.value.__cause__, StoredArtifactError)
    text = str(err.value)
    assert "2026-01-01T00.00.00.000Z" in text and "pickled Python objects" in text
    assert "--load-versions" in text and "you trust" not in text
    assert not marker.exists()


def test_a_crafted_flower_result_is_refused_and_runs_no_code(tmp_path, crafted):
    from fdrmfl_pipeline.flower.server_app import RESULT_JSON, RESULT_TENSORS, load_result

    marker = crafted(tmp_path / RESULT_TENSORS)
    (tmp_path / RESULT_JSON).write_text(json.dumps({"history": []}))
    with pytest.raises(StoredArtifactError, match="not a weights-only result"):
        load_result(tmp_path)
    assert not marker.exists()


def _job(tmp_path, **paths):
    from fdrmfl_pipeline.flower.job import FlowerJob

    data = tmp_path / "project" / "data"
    run = data / "06_models" / "flower" / "run"
    run.mkdir(parents=True)
    fields = {
        "setup_json": {},
        "clients_dir": str(data / "03_primary" / "clients"),
        "expected_clients": 2,
        "output_dir": str(run),
        "checkpoint_path": str(run / "checkpoint.pt"),
        **paths,
    }
    path = run / "job.json"
    path.write_text(json.dumps(fields))
    return FlowerJob, path


def test_a_flower_job_inside_the_data_folder_loads(tmp_path):
    job_cls, path = _job(tmp_path)
    assert job_cls.load(path).expected_clients == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("output_dir", "/etc"),
        ("clients_dir", "{data}/../../outside"),  # traversal out of the data folder
        ("checkpoint_path", "/tmp/elsewhere/ck.pt"),
    ],
)
def test_a_flower_job_writing_outside_its_folder_is_refused(tmp_path, field, value):
    data = tmp_path / "project" / "data"
    job_cls, path = _job(tmp_path, **{field: value.format(data=data)})
    with pytest.raises(UnsafePathError, match=rf"{field}=.* lies outside .*FDRMFL_FLOWER_ROOT"):
        job_cls.load(path)


def test_the_flower_root_can_be_set_explicitly(tmp_path, monkeypatch):
    job_cls, path = _job(tmp_path, output_dir=str(tmp_path / "shared" / "out"))
    with pytest.raises(UnsafePathError):
        job_cls.load(path)
    monkeypatch.setenv("FDRMFL_FLOWER_ROOT", str(tmp_path))
    assert job_cls.load(path).output_dir.endswith("out")
