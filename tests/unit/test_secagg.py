"""Secure aggregation by pairwise masking: the server's unmasked value is the exact fixed-point
sum, a single masked answer tells nothing, dropped clients are tolerated, and a client refuses
every reveal that would expose one answer."""

from __future__ import annotations

import numpy as np
import pytest

from fdrmfl_pipeline.core import secagg as sa


def _release(n: int, rid: str = "r1"):
    clients = {c: sa.MaskingClient(c, rid) for c in range(n)}
    keys = {c: m.public_key() for c, m in clients.items()}
    return clients, keys


def test_the_unmasked_sum_is_the_exact_fixed_point_sum_of_the_answers():
    rng = np.random.default_rng(0)
    values = {c: rng.normal(size=200) * 10.0 ** rng.integers(-4, 9, size=200) for c in range(4)}
    clients, keys = _release(4)
    masked = {c: clients[c].masked(values[c], keys) for c in clients}
    reveals = {c: clients[c].reveal(sorted(clients), []) for c in clients}
    total = sa.unmask(masked, reveals, sorted(clients))
    assert np.array_equal(total, sa.plain_sum(values))  # masks cancel exactly
    plain = sum(values[c] for c in sorted(values))
    assert np.allclose(total, plain, rtol=1e-12, atol=4 * 2.0**-40)


def test_one_masked_answer_does_not_resemble_the_value():
    clients, keys = _release(3)
    x = np.full(4000, 0.5)
    masked = clients[0].masked(x, keys)
    # the server's view of one answer: 128-bit integers spread over the whole ring
    top = np.array([int(v) >> 120 for v in masked])  # the highest 8 bits
    assert len(set(top.tolist())) > 200
    assert not np.allclose(sa.dequantize(masked), x)
    # the same answer in another release is masked differently
    again, keys2 = _release(3, "r2")
    assert not np.array_equal(again[0].masked(x, keys2), masked)


def test_a_client_that_drops_before_answering_leaves_the_sum_of_the_others_exact():
    rng = np.random.default_rng(1)
    values = {c: rng.normal(size=50) for c in range(5)}
    clients, keys = _release(5)
    survivors = [0, 1, 3, 4]  # client 2 sent its key, then its answer never arrived
    masked = {c: clients[c].masked(values[c], keys) for c in survivors}
    reveals = {c: clients[c].reveal(survivors, [2]) for c in survivors}
    assert set(reveals[0]["pairs"]) == {2}  # only the pairwise key with the dropped client
    total = sa.unmask(masked, reveals, sorted(clients))
    assert np.array_equal(total, sa.plain_sum({c: values[c] for c in survivors}))


def test_a_late_answer_of_a_dropped_client_stays_hidden():
    """After the unmasking the server knows the survivors' self masks and their pairwise keys
    with client 2, but never client 2's self mask: its late answer still looks random."""
    clients, keys = _release(3)
    x = np.full(2000, 0.25)
    late = clients[2].masked(x, keys)
    for c in (0, 1):
        clients[c].masked(np.ones(x.size), keys)
    reveals = {c: clients[c].reveal([0, 1], [2]) for c in (0, 1)}
    guess = np.array([0] * x.size, dtype=object)
    for c in (0, 1):  # remove every mask the server can compute
        guess = (guess + sa._prg(reveals[c]["pairs"][2], x.size)) % sa.MOD
    assert not np.allclose(sa.dequantize((late + guess) % sa.MOD), x)
    assert not np.allclose(sa.dequantize((late - guess) % sa.MOD), x)


def test_a_survivor_that_does_not_unmask_fails_the_release():
    clients, keys = _release(3)
    masked = {c: clients[c].masked(np.ones(3), keys) for c in clients}
    reveals = {c: clients[c].reveal([0, 1, 2], []) for c in (0, 1)}  # 2 went silent
    with pytest.raises(sa.ReleaseFailed, match=r"clients \[2\] did not unmask"):
        sa.unmask(masked, reveals, [0, 1, 2])


def test_clients_refuse_reveals_that_would_expose_one_answer():
    clients, keys = _release(3)
    for c in clients.values():
        c.masked(np.ones(3), keys)
    with pytest.raises(sa.SecAggError, match="refuses to unmask a sum of 1 answer"):
        clients[0].reveal([0], [1, 2])
    with pytest.raises(sa.SecAggError, match="do not split the release's clients"):
        clients[0].reveal([0, 1], [1, 2])  # 1 named both alive and dropped
    with pytest.raises(sa.SecAggError, match="do not split"):
        clients[2].reveal([0, 1], [2])  # 2 is told it dropped but asked to unmask
    clients[0].reveal([0, 1, 2], [])
    with pytest.raises(sa.SecAggError, match="already unmasked"):
        clients[0].reveal([0, 1], [2])  # a second reveal would give its pairwise keys too
    with pytest.raises(sa.SecAggError, match="at least 2 answers"):
        sa.unmask({0: np.zeros(3, dtype=object)}, {}, [0, 1])


def test_keys_must_include_the_client_and_be_distinct():
    clients, keys = _release(2)
    with pytest.raises(sa.SecAggError, match="not among the release's keys"):
        clients[0].masked(np.ones(2), {1: keys[1]})
    with pytest.raises(sa.SecAggError, match="same public key"):
        clients[0].masked(np.ones(2), {0: keys[0], 1: keys[0]})


def test_values_outside_the_fixed_point_range_are_named():
    with pytest.raises(sa.SecAggError, match="client 0's answer holds NaN"):
        sa.plain_sum({0: np.array([np.nan]), 1: np.array([1.0])})
    with pytest.raises(sa.SecAggError, match="above the fixed-point range"):
        sa.quantize(np.array([1e30]))


def test_state_survives_a_trip_through_bytes_and_layouts_round_trip():
    clients, keys = _release(2)
    clients[0].masked(np.ones(2), keys)
    back = sa.MaskingClient.from_bytes(clients[0].to_bytes())
    assert back == clients[0]
    arrays = {"b": np.arange(6.0).reshape(2, 3), "a": np.array([1.5])}
    vec, layout = sa.flatten(arrays)
    out = sa.unflatten(vec, layout)
    assert [k for k, _ in layout] == ["a", "b"]
    assert all(np.array_equal(out[k], arrays[k]) for k in arrays)
    with pytest.raises(sa.SecAggError, match="does not fit"):
        sa.unflatten(np.zeros(3), layout)
