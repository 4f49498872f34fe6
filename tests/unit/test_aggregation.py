"""FedAvg, retention and client sampling arithmetic."""

from __future__ import annotations

import pytest
import torch

from fdrmfl_pipeline.core.aggregation import fedavg, retain, sample_clients


def test_fedavg_weights_by_sample_count():
    a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor(4.0), "step": torch.tensor(7)}
    b = {"w": torch.tensor([3.0, 6.0]), "b": torch.tensor(0.0), "step": torch.tensor(7)}
    out = fedavg([(0, a, 1), (1, b, 3)])
    # by hand: w = (1*[1,2] + 3*[3,6]) / 4 = [2.5, 5.0]; b = 4/4 = 1.0
    assert torch.equal(out["w"], torch.tensor([2.5, 5.0]))
    assert out["b"].item() == 1.0
    assert out["step"].item() == 7 and out["step"].dtype == torch.int64


def test_fedavg_sums_in_client_order_whatever_the_arrival_order():
    g = torch.Generator().manual_seed(0)
    states = [(c, {"w": torch.randn(50, generator=g)}, n) for c, n in ((2, 7), (0, 3), (1, 11))]
    first = fedavg(states)
    second = fedavg(list(reversed(states)))
    assert torch.equal(first["w"], second["w"])  # bit-identical


def test_retention_mixes_old_and_new():
    avg = {"w": torch.tensor([1.0])}
    old = {"w": torch.tensor([3.0])}
    assert retain(avg, old, 0.25)["w"].item() == pytest.approx(0.75 * 1 + 0.25 * 3)
    assert retain(avg, old, 0.0) is avg
    with pytest.raises(ValueError, match="retention"):
        retain(avg, old, 1.0)


def test_client_sampling_is_seeded_by_seed_and_round():
    ids = list(range(10))
    a = sample_clients(ids, 0.3, seed=1, round_=4)
    assert len(a) == 3 and a == sorted(a)
    assert a == sample_clients(list(reversed(ids)), 0.3, seed=1, round_=4)
    draws = {tuple(sample_clients(ids, 0.3, seed=1, round_=r)) for r in range(1, 8)}
    assert len(draws) > 1  # rounds differ
    assert sample_clients(ids, 1.0, 1, 1) == ids
    with pytest.raises(ValueError, match="fraction"):
        sample_clients(ids, 0.0, 1, 1)
