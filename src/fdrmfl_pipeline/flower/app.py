"""Module-level apps for ``flwr run`` (``flower_app/pyproject.toml`` points here); the job path
arrives in the run config."""

from fdrmfl_pipeline.flower.client_app import make_client_app
from fdrmfl_pipeline.flower.server_app import make_server_app

client_app = make_client_app()
server_app = make_server_app()
