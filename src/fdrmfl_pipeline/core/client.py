"""Client-side work: one local update, and evaluation of a model on a client's split."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from fdrmfl_pipeline.core import losses, seeding
from fdrmfl_pipeline.core.clientdata import ClientData, SplitArrays, without_modalities
from fdrmfl_pipeline.core.config import LocalTrainConfig  # noqa: F401  (re-exported)
from fdrmfl_pipeline.core.model import FDRMFLModel, ModelConfig, build_model

State = dict[str, torch.Tensor]
LOSS_TERMS = ("mse", "ce", "mi", "skl", "con", "prox", "l1", "anchor")


@dataclass
class ClientUpdate:
    """Exactly what crosses the client -> server boundary: weights, a count, scalar metrics."""

    client_id: int
    state: State
    n_samples: int
    metrics: dict[str, float] = field(default_factory=dict)


def _tensors(
    split: SplitArrays, idx=None
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    sel = slice(None) if idx is None else idx
    x = {k: torch.from_numpy(np.ascontiguousarray(v[sel])) for k, v in split.x.items()}
    return x, torch.from_numpy(split.mask[sel]), torch.from_numpy(split.y[sel])


@torch.no_grad()
def _frozen_z(config: ModelConfig, state: State, split: SplitArrays, chunk: int) -> torch.Tensor:
    """Z of a frozen model (eval mode, no latent sampling) for every row of ``split``, in
    chunks of ``chunk`` rows: the contrastive term's global and previous representations."""
    model = model_from_state(config, state).eval()
    parts = []
    for start in range(0, split.n, chunk):
        x, mask, _ = _tensors(split, np.arange(start, min(start + chunk, split.n)))
        parts.append(model(x, mask, sample=False).z)
    return torch.cat(parts) if parts else torch.zeros(0, config.latent_dim)


def model_from_state(config: ModelConfig, state: State) -> FDRMFLModel:
    model = build_model(config, seed=0)
    model.load_state_dict(state)
    return model


def local_update(
    config: ModelConfig,
    global_state: State,
    prev_state: State | None,
    data: ClientData,
    cfg: LocalTrainConfig,
    seed: int,
    round_: int,
    anchor_state: State | None = None,
    noise_secret: str = "",
    absent: tuple[str, ...] = (),
) -> tuple[ClientUpdate, State]:
    """Train the received global model on the client's ``train`` split.

    ``absent``: modalities the client does not have yet this round
    (:meth:`FederationConfig.absent`); its rows are used as if they lacked them.

    Under local DP (``cfg.dp_clip > 0``) the update sent is the clipped, noised change
    (:func:`fdrmfl_pipeline.core.privacy.local_privatize`, noise seeded with ``noise_secret``)
    and carries no loss metrics; the client keeps its own un-noised model.

    ``anchor_state`` (with ``cfg.anchor_mu > 0``): the federated warm start; the encoders and
    fusion are pulled toward it by ``anchor_mu/2 * ||w - w_anchor||^2`` (L2-SP), i.e. weight decay
    toward the start instead of toward zero. Its tensors outside :data:`losses.ANCHORED` are
    ignored.

    The optimiser is created fresh every round (no moments carried across rounds). Returns the
    update for the server and the client's new local state (kept client-side as the "previous
    model" of the contrastive term). Randomness (shuffling, dropout, latent sampling) is seeded by
    (seed, client, round), so the result does not depend on which other clients ran before.
    """
    t0 = time.perf_counter()
    data = without_modalities(data, absent, [m.name for m in config.modalities])
    torch.manual_seed(seeding.derived_seed(seed, "local", data.client_id, round_))
    gen = torch.Generator().manual_seed(
        seeding.derived_seed(seed, "shuffle", data.client_id, round_)
    )
    model = model_from_state(config, global_state)
    model.train()
    use_con = cfg.lambda_con > 0 and prev_state is not None
    z_glob_all = z_prev_all = None
    if use_con:  # the frozen models' Z of every training row, once per round (they do not change)
        z_glob_all = _frozen_z(config, global_state, data.train, cfg.batch_size)
        z_prev_all = _frozen_z(config, prev_state, data.train, cfg.batch_size)
    global_params = [p.detach().clone() for p in model.parameters()] if cfg.prox_mu > 0 else None
    anchor = None
    if cfg.anchor_mu > 0:
        if anchor_state is None:
            raise ValueError("anchor_mu > 0 needs the warm-start state to anchor to")
        anchor = losses.anchored_pairs(model, anchor_state)
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.optimizer]
    # foreach: one batched update over all tensors (the per-tensor loop is torch's CPU default)
    opt = opt_cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    train = data.train
    sums = dict.fromkeys((*LOSS_TERMS, "loss"), 0.0)
    steps = 0
    for _ in range(cfg.local_epochs):
        perm = torch.randperm(train.n, generator=gen).numpy()
        for start in range(0, train.n, cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            if len(idx) < 2 and train.n >= 2:
                continue  # a batch of one has no correlation or variance
            x, mask, y = _tensors(train, idx)
            out = model(x, mask)
            if config.n_classes:
                terms = {"ce": losses.cross_entropy(out.y_hat, y)}
                loss = terms["ce"]
            else:
                terms = {"mse": losses.mse(out.y_hat, y)}
                loss = terms["mse"]
            if cfg.lambda_mi > 0:
                if config.n_classes:
                    terms["mi"] = losses.supervised_contrastive_mi(out.z, y, cfg.tau)
                elif cfg.mi_estimator == "kernel":
                    terms["mi"] = losses.kernel_contrastive_mi(out.z, y, cfg.tau)
                else:
                    terms["mi"] = losses.gaussian_mi_loss(model.mi_critic(out.z).squeeze(-1), y)
                loss = loss + cfg.lambda_mi * terms["mi"]
            if cfg.lambda_kl > 0:
                terms["skl"] = losses.symmetric_kl(out.mu, out.logvar, mask)
                loss = loss + cfg.lambda_kl * terms["skl"]
            if use_con:
                rows = torch.from_numpy(idx)
                terms["con"] = losses.moon_contrastive(
                    out.z, z_glob_all[rows], z_prev_all[rows], cfg.tau
                )
                loss = loss + cfg.lambda_con * terms["con"]
            if cfg.lambda_l1 > 0:
                terms["l1"] = losses.l1_linear_paths(model)
                loss = loss + cfg.lambda_l1 * terms["l1"]
            if global_params is not None:
                terms["prox"] = losses.proximal(list(model.parameters()), global_params)
                loss = loss + 0.5 * cfg.prox_mu * terms["prox"]
            if anchor is not None:
                terms["anchor"] = losses.anchor_penalty(anchor)
                loss = loss + 0.5 * cfg.anchor_mu * terms["anchor"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            for k, v in terms.items():
                sums[k] += float(v.detach())
            sums["loss"] += float(loss.detach())
            steps += 1
    metrics = {f"train_{k}": (v / steps if steps else float("nan")) for k, v in sums.items()}
    metrics["seconds"] = time.perf_counter() - t0
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if cfg.dp_clip > 0:
        from fdrmfl_pipeline.core.privacy import local_privatize

        sent, _ = local_privatize(
            state,
            global_state,
            cfg.dp_clip,
            cfg.dp_noise_multiplier,
            seed,
            round_,
            data.client_id,
            noise_secret,
        )
        # the losses would be releases the accountant does not cover
        metrics = {k: (float("nan") if k.startswith("train_") else v) for k, v in metrics.items()}
        return ClientUpdate(data.client_id, sent, train.n, metrics), state
    return ClientUpdate(data.client_id, state, train.n, metrics), state


@torch.no_grad()
def predict(
    model: FDRMFLModel, split: SplitArrays, batch_size: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Fused features Z and the head's prediction (standardised units; a classifier's logits,
    ``(n, C)``) for every row of ``split``."""
    model.eval()
    zs, ys = [], []
    for start in range(0, split.n, batch_size):
        x, mask, _ = _tensors(split, slice(start, start + batch_size))
        out = model(x, mask, sample=False)
        zs.append(out.z.numpy())
        ys.append(out.y_hat.numpy())
    d = model.config.latent_dim
    if not zs:
        k = model.config.n_classes
        return np.zeros((0, d), np.float32), np.zeros((0, k) if k else 0, np.float32)
    return np.concatenate(zs), np.concatenate(ys)


def evaluate_mse(
    model: FDRMFLModel,
    split: SplitArrays,
    y_mean: float,
    y_std: float,
    absent: tuple[str, ...] = (),
) -> float:
    """The head's validation loss on ``split``: the MSE in the target's original units, or a
    classifier's log-loss (mean cross-entropy). Early stopping, tuning and the history's
    ``val_mse`` column use it (lower is better either way). ``absent``: modalities the client
    does not have yet (masked off)."""
    if split.n == 0:
        return float("nan")
    if absent:
        off = np.array([m in absent for m in model.names])
        mask = split.mask.copy()
        mask[:, off] = False
        split = SplitArrays(split.sample_ids, split.x, mask, split.y, split.y_raw)
    _, y_hat = predict(model, split)
    if model.config.n_classes:
        logp = torch.log_softmax(torch.from_numpy(y_hat).double(), dim=1).numpy()
        return float(-np.mean(logp[np.arange(split.n), split.y_raw.astype(np.int64)]))
    pred = y_hat.astype(np.float64) * y_std + y_mean
    return float(np.mean((pred - split.y_raw) ** 2))
