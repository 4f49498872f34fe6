"""Shared helpers of the reliability suite: crafted files and tiny federations."""

from __future__ import annotations

import pathlib

import pytest
import torch


class Payload:
    """Pickles to a call that creates ``marker``: loading it unsafely would run code."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.fixture
def crafted(tmp_path):
    """crafted(path) writes a torch file that runs code when unpickled; returns the marker
    whose existence would prove it ran."""
    marker = tmp_path / "PAYLOAD_RAN"

    def write(path: pathlib.Path, extra: dict | None = None) -> pathlib.Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"evil": Payload(marker), **(extra or {})}, path)
        assert not marker.exists()
        return marker

    return write
