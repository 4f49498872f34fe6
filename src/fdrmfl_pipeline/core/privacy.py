"""Client-level differential privacy for the server loop (DP-FedAvg) and its accountant.

Mechanism (``mode: central``, a trusted server that adds the noise): each round every client is
sampled independently with probability ``q`` (``training.federation.client_fraction``; all
clients when it is 1). The server clips each answering client's model change to L2 norm
``clip``, sums the clipped changes, adds Gaussian noise N(0, (noise_multiplier * clip)^2) per
coordinate, and divides by the *expected* number of clients ``q * K`` (a fixed denominator, so
one client changes the sum by at most ``clip``). That is the sampled Gaussian mechanism on the
client level: the guarantee covers everything one client contributes to the model.

Accounting: ``rounds`` compositions of the Poisson-sampled Gaussian mechanism, add-or-remove-one
client neighbouring, by the RDP accountant of Google's ``dp-accounting`` library (maintained,
the same accountant TensorFlow Privacy and Opacus's RDP option implement; RDP is tight enough
for tens to thousands of rounds and needs no discretisation choices). Noise is drawn from a
generator seeded by (seed, round), so every engine gives the same model for a seed.

Mechanism (``mode: local``, no trusted server): each client clips its own model change to
``clip`` and adds N(0, (noise_multiplier * clip)^2) per coordinate before sending it; the server
averages what it receives (FedAvg). Accounting per client: the rounds it takes part in (at most
``rounds``) compose the Gaussian mechanism with sensitivity ``2 * clip`` (any change of the
client's data moves its clipped change by at most that), so the accountant sees noise multiplier
``noise_multiplier / 2``, no sampling amplification (the server sees who answers). The noise is
drawn on the client from a generator seeded by (seed, round, client) and the client's own
secret: in process and in simulation there is none (reproducible runs for experiments; the
server could rebuild the noise), in the deployment each SuperNode gets a random secret.

What is *not* released under DP, so the guarantee holds for the whole training job: the
federated warm start and the federated scaler (both refused: use ``warm_start.kind: none`` and
``data.scaling: local``), and per-round validation metrics (not computed; early stopping off).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from fdrmfl_pipeline.core import seeding
from fdrmfl_pipeline.core.config import DPSettings  # noqa: F401  (re-exported)
from fdrmfl_pipeline.errors import ConfigError, PrivacyBudgetError

State = dict[str, torch.Tensor]
MODES = ("off", "central", "local")


def _event(noise_multiplier: float, sample_rate: float, rounds: int):
    import dp_accounting

    step = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sample_rate < 1.0:
        step = dp_accounting.PoissonSampledDpEvent(sample_rate, step)
    return dp_accounting.SelfComposedDpEvent(step, rounds)


# sampled Gaussian: integer orders only, whose RDP the library computes exactly (its series for
# fractional orders may not converge at small noise, and it then drops those orders)
SAMPLED_ORDERS = (*range(2, 65), 128, 256, 512, 1024)


def _accountant(sample_rate: float):
    from dp_accounting.rdp import RdpAccountant

    return RdpAccountant(orders=SAMPLED_ORDERS) if sample_rate < 1.0 else RdpAccountant()


def epsilon(noise_multiplier: float, sample_rate: float, rounds: int, delta: float) -> float:
    """(epsilon, delta)-DP spent by ``rounds`` rounds of the sampled Gaussian mechanism."""
    if rounds <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    acc = _accountant(sample_rate)
    acc.compose(_event(noise_multiplier, sample_rate, rounds))
    return float(acc.get_epsilon(delta))


def calibrate(target_epsilon: float, sample_rate: float, rounds: int, delta: float) -> float:
    """The smallest noise multiplier whose job spends at most ``target_epsilon``."""
    import dp_accounting

    if rounds <= 0:
        return 0.0
    return float(
        dp_accounting.calibrate_dp_mechanism(
            lambda: _accountant(sample_rate),
            lambda sigma: _event(sigma, sample_rate, rounds),
            target_epsilon,
            delta,
            bracket_interval=dp_accounting.mechanism_calibration.ExplicitBracketInterval(
                0.01, 1000.0
            ),
            tol=1e-4,
        )
    )


def resolve(
    mode: str,
    clip: float,
    noise_multiplier: float | None,
    target_epsilon: float | None,
    delta: float,
    max_epsilon: float | None,
    sample_rate: float,
    rounds: int,
) -> DPSettings:
    """The mechanism and its (epsilon, delta) before any training: ``target_epsilon`` solves
    for the noise; a fixed ``noise_multiplier`` whose epsilon exceeds ``max_epsilon`` raises
    :class:`PrivacyBudgetError`."""
    if mode not in MODES:
        raise ConfigError(f"training.privacy.mode '{mode}' is not one of {MODES}")
    if mode == "off":
        return DPSettings()
    if (noise_multiplier is None) == (target_epsilon is None):
        raise ConfigError(
            "training.privacy: give exactly one of noise_multiplier and target_epsilon"
        )
    if mode == "local":  # sensitivity 2 clip, no amplification by sampling
        sample_rate = 1.0
        sigma = (
            2 * calibrate(target_epsilon, 1.0, rounds, delta)
            if target_epsilon is not None
            else float(noise_multiplier)
        )
        eps = epsilon(sigma / 2, 1.0, rounds, delta)
    else:
        sigma = (
            calibrate(target_epsilon, sample_rate, rounds, delta)
            if target_epsilon is not None
            else float(noise_multiplier)
        )
        eps = epsilon(sigma, sample_rate, rounds, delta)
    budget = max_epsilon if max_epsilon is not None else target_epsilon
    if budget is not None and eps > budget * (1 + 1e-6):
        raise PrivacyBudgetError(
            f"training.privacy: {rounds} rounds of {mode} DP at noise_multiplier {sigma:.4g} "
            f"with client sampling rate {sample_rate:g} spend epsilon = {eps:.3f} (delta {delta:g}), over "
            f"the budget max_epsilon = {budget:g}; nothing was trained. Raise the noise, "
            "lower training.federation.rounds or client_fraction, or raise the budget"
        )
    return DPSettings(mode, clip, sigma, delta, sample_rate, rounds, eps)


def poisson_sample(client_ids: Sequence[int], rate: float, seed: int, round_: int) -> list[int]:
    """Each client independently with probability ``rate`` (all when rate is 1), by a generator
    seeded with (seed, round); sorted. May be empty."""
    ids = sorted(int(c) for c in client_ids)
    if rate >= 1.0:
        return ids
    draw = seeding.rng(seed, "dp-client-sampling", round_).random(len(ids))
    return [c for c, u in zip(ids, draw, strict=True) if u < rate]


def _float_keys(state: State) -> list[str]:
    return [k for k, v in state.items() if torch.is_floating_point(v)]


def clip_update(update: State, start: State, clip: float) -> tuple[State, float]:
    """``update - start`` over the float tensors, scaled to L2 norm at most ``clip``; returns
    the clipped change and the norm before clipping."""
    keys = _float_keys(start)
    delta = {k: update[k].to(torch.float64) - start[k].to(torch.float64) for k in keys}
    norm = math.sqrt(sum(float((d * d).sum()) for d in delta.values()))
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    return {k: d * scale for k, d in delta.items()}, norm


def private_average(
    start: State,
    updates: Sequence[tuple[int, State]],
    dp: DPSettings,
    n_clients: int,
    seed: int,
    round_: int,
) -> tuple[State, dict[str, float]]:
    """The new global model: ``start + (sum of clipped changes + noise) / (q * K)``, summed in
    client order; the noise generator is seeded by (seed, round). Returns the state and a few
    diagnostics (clients, mean norm before clipping, share clipped)."""
    keys = _float_keys(start)
    total = {k: torch.zeros_like(start[k], dtype=torch.float64) for k in keys}
    norms = []
    for _, state in sorted(updates, key=lambda u: u[0]):
        clipped, norm = clip_update(state, start, dp.clip)
        norms.append(norm)
        for k in keys:
            total[k] += clipped[k]
    gen = torch.Generator().manual_seed(int(seeding.rng(seed, "dp-noise", round_).integers(2**62)))
    std = dp.noise_multiplier * dp.clip
    denom = dp.sample_rate * n_clients
    out: State = {}
    for k, v in start.items():
        if k not in total:
            out[k] = v.clone()
            continue
        noise = torch.randn(v.shape, generator=gen, dtype=torch.float64) * std
        out[k] = (v.to(torch.float64) + (total[k] + noise) / denom).to(v.dtype)
    info = {
        "dp_clients": float(len(norms)),
        "dp_norm_mean": float(sum(norms) / len(norms)) if norms else float("nan"),
        "dp_clipped_share": (
            float(sum(n > dp.clip for n in norms) / len(norms)) if norms else float("nan")
        ),
    }
    return out, info


def local_privatize(
    update: State,
    start: State,
    clip: float,
    noise_multiplier: float,
    seed: int,
    round_: int,
    client: int,
    secret: str = "",
) -> tuple[State, float]:
    """Local DP on the client: ``start`` + its change clipped to ``clip`` + Gaussian noise of
    std ``noise_multiplier * clip``; the generator is seeded by (seed, round, client) and the
    client's ``secret``. Non-float tensors are the update's. Returns the state to send and the
    change's norm before clipping."""
    import hashlib

    clipped, norm = clip_update(update, start, clip)
    digest = hashlib.sha256(secret.encode()).digest()  # all 256 bits of the secret count
    salt = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 32, 4)]
    gen = torch.Generator().manual_seed(
        int(seeding.rng(seed, "local-dp", round_, client, *salt).integers(2**62))
    )
    std = noise_multiplier * clip
    out: State = {}
    for k, v in update.items():
        if k not in clipped:
            out[k] = v.clone()
            continue
        noise = torch.randn(v.shape, generator=gen, dtype=torch.float64) * std
        out[k] = (start[k].to(torch.float64) + clipped[k] + noise).to(v.dtype)
    return out, norm
