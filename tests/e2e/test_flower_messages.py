"""Cheap Flower messages: a query (the data's description, a warm-start answer, a secure
aggregation key exchange) is answered in a fresh process without importing torch, which each
deployment message would otherwise pay for (every message is a new ClientApp process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="the flower extra is not installed (pip install -e '.[flower]')")
pytestmark = pytest.mark.flower

SCRIPT = r"""
import json, sys
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict, RecordDict
from fdrmfl_pipeline.flower.client_app import make_client_app
from fdrmfl_pipeline.flower.job import FlowerJob
from fdrmfl_pipeline.flower.records import arrays_record, record_arrays, scaler_record
from fdrmfl_pipeline.core.clientdata import Scaler

from flwr.supercore.task_identity import TaskIdentity

# what the SuperNode's runtime sets in a ClientApp process
TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
job = FlowerJob.load(sys.argv[1])
app = make_client_app(job)
ctx = Context(run_id=1, node_id=7, node_config={"partition-id": 0}, state=RecordDict(), run_config={})

def ask(content):
    return app(Message(content, dst_node_id=7, message_type="query"), ctx).content

out = {}
described = ask(RecordDict())
out["describe"] = sorted(described.keys())
shapes = {m.name: m.shape for m in job.setup.model.modalities}
scaler = Scaler({k: np.zeros(s) for k, s in shapes.items()}, {k: np.ones(s) for k, s in shapes.items()}, 0.0, 1.0)
cross = ask(RecordDict({"pls": ConfigRecord({"op": "cross"}), "scaler": scaler_record(scaler)}))
out["cross"] = list(record_arrays(cross.array_records["pls"])["v"].shape)
key = ask(RecordDict({"secagg": ConfigRecord({"stage": "keys", "release": "r"})}))
out["key"] = len(key.config_records["secagg"]["public-key"])
out["torch"] = "torch" in sys.modules
print(json.dumps(out))
"""


def test_queries_are_answered_without_importing_torch(tmp_path):
    import pyarrow.parquet as pq

    from fdrmfl_pipeline.core.clientdata import client_table
    from fdrmfl_pipeline.core.modalities import to_arrow
    from fdrmfl_pipeline.core.setup import TrainingSetup
    from fdrmfl_pipeline.flower.job import FlowerJob
    from fdrmfl_pipeline.params import TrainingParams

    from ..tiny import tiny_clients

    data, assign, _, _, _ = tiny_clients()
    staging = tmp_path / "data" / "clients"
    staging.mkdir(parents=True)
    pq.write_table(client_table(to_arrow(data), assign, 0), staging / "client_0.parquet")
    setup = TrainingSetup.from_params(TrainingParams(), 0, data)
    job = FlowerJob.create(
        setup, clients_dir=str(staging), expected_clients=1, output_dir=str(tmp_path / "data/out")
    )
    path = job.save(tmp_path / "data" / "job.json")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["describe"] == ["info", "stats"]
    assert out["cross"][0] > 0 and out["key"] == 32
    assert out["torch"] is False, "a query imported torch"
    assert Path(path).exists()
