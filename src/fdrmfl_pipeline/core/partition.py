"""Client partition schemes: pure functions of targets, pools, sizes and a seeded generator.

Flow (:func:`partition`): (1) a global train/test split (the source's predefined split, or a
random ``test_fraction``); (2) the scheme assigns every sample of each pool (train pool, test pool)
to a client, drawing client-level parameters once so a client's test data follows the same
distribution as its training data; (3) ``val`` is carved from each client's training part (at random, or its last rows in time).
Test data is never looked at to make decisions: quantile bins are computed on the train pool.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from fdrmfl_pipeline.errors import PartitionError

logger = logging.getLogger(__name__)

SCHEMES = (
    "paper",
    "iid",
    "dirichlet",
    "target_shift",
    "quantity_skew",
    "covariate_shift",
    "missing_modality",
    "column",
    "time_blocks",
)
# clients given by the data itself: every row (test rows too) belongs to its natural client
NATURAL = ("column", "time_blocks")
SPLIT_STRATEGIES = ("random", "last")
TRAIN, VAL, TEST = "train", "val", "test"


@dataclass(frozen=True)
class PartitionOptions:
    """Every knob of every scheme (only the chosen scheme's are read)."""

    scheme: str = "paper"
    n_clients: int = 3
    test_fraction: float = 0.2
    use_predefined_split: bool = True
    val_fraction: float = 0.15
    dirichlet_alpha: float = 0.5
    dirichlet_bins: int = 5
    min_client_size: int = 5
    max_tries: int = 100
    shift_strictness: float = 0.8
    skew_power: float = 1.0
    gain_std: float = 0.2
    offset_std: float = 0.2
    noise_std: float = 0.1
    missing_probability: float = 0.3
    missing_map: Mapping[int, Sequence[str]] | None = field(default=None)
    test_strategy: str = "random"
    val_strategy: str = "random"


def balanced_sizes(n: int, k: int, remainder_last: bool = False) -> np.ndarray:
    """Split ``n`` into ``k`` sizes; the remainder goes to the last client or is spread first."""
    base = np.full(k, n // k)
    rem = n - base.sum()
    if remainder_last:
        base[-1] += rem
    else:
        base[:rem] += 1
    return base


def _slices(order: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Client id per position of ``order`` given contiguous slice ``sizes``."""
    out = np.empty(len(order), dtype=np.int64)
    out[order] = np.repeat(np.arange(len(sizes)), sizes)
    return out


def _sizes_from_proportions(n: int, p: np.ndarray) -> np.ndarray:
    """Largest-remainder rounding of ``n * p`` to integers summing to ``n``."""
    raw = n * p / p.sum()
    sizes = np.floor(raw).astype(int)
    short = n - sizes.sum()
    if short:
        sizes[np.argsort(-(raw - sizes), kind="stable")[:short]] += 1
    return sizes


def assign_paper(targets: np.ndarray, n_clients: int, rng: np.random.Generator) -> np.ndarray:
    """Reference protocol: a random permutation cut into floor(n/K) slices, remainder to the last."""
    return _slices(rng.permutation(len(targets)), balanced_sizes(len(targets), n_clients, True))


def assign_iid(targets: np.ndarray, n_clients: int, rng: np.random.Generator) -> np.ndarray:
    """Uniformly random, balanced client sizes (differ by at most one)."""
    return _slices(rng.permutation(len(targets)), balanced_sizes(len(targets), n_clients))


def assign_target_shift(
    targets: np.ndarray, n_clients: int, rng: np.random.Generator, strictness: float
) -> np.ndarray:
    """Clients ordered by target: sort by ``strictness*z(y) + (1-strictness)*noise``, cut evenly.

    ``strictness`` 1 gives disjoint target ranges per client (client 0 lowest), 0 gives IID.
    """
    sd = targets.std() or 1.0
    z = (targets - targets.mean()) / sd
    key = strictness * z + (1.0 - strictness) * rng.standard_normal(len(targets))
    return _slices(np.argsort(key, kind="stable"), balanced_sizes(len(targets), n_clients))


def assign_by_proportions(
    pool_index: np.ndarray, proportions: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Shuffle ``pool_index`` positions and cut them by client ``proportions``."""
    sizes = _sizes_from_proportions(len(pool_index), proportions)
    return _slices(rng.permutation(len(pool_index)), sizes)


def quantity_skew_proportions(n_clients: int, power: float) -> np.ndarray:
    """Power-law client shares: client k gets a share proportional to (k+1)^-power."""
    p = (np.arange(n_clients) + 1.0) ** (-power)
    return p / p.sum()


def target_bins(targets: np.ndarray, reference: np.ndarray, n_bins: int) -> np.ndarray:
    """Quantile bin of each target, with edges from ``reference`` (the train pool) only."""
    edges = np.quantile(reference, np.linspace(0, 1, n_bins + 1)[1:-1])
    return np.searchsorted(edges, targets, side="right")


def covariate_transforms(
    n_clients: int, rng: np.random.Generator, gain_std: float, offset_std: float, noise_std: float
) -> pd.DataFrame:
    """Per-client input transformation for ``covariate_shift``.

    Client k's inputs become ``gain_k * x + s * offset_k + s * noise_k * eps`` per modality, where
    ``s`` is that modality's standard deviation over the client's own samples and ``eps`` is
    N(0, 1) noise seeded by (seed, client). ``gain_k = exp(N(0, gain_std))``,
    ``offset_k ~ N(0, offset_std)``, and ``noise_k`` grows linearly from 0 (client 0) to
    ``noise_std`` (last client).
    """
    gains = np.exp(rng.normal(0.0, gain_std, n_clients))
    offsets = rng.normal(0.0, offset_std, n_clients)
    noise = noise_std * np.linspace(0.0, 1.0, n_clients) if n_clients > 1 else np.zeros(1)
    return pd.DataFrame(
        {
            "client": np.arange(n_clients),
            "covariate_gain": gains,
            "covariate_offset": offsets,
            "covariate_noise": noise,
        }
    )


def apply_covariate_shift(
    x: np.ndarray, gain: float, offset: float, noise: float, rng: np.random.Generator
) -> np.ndarray:
    """Apply one client's :func:`covariate_transforms` row to a modality array ``x`` (n, ...)."""
    if gain == 1.0 and offset == 0.0 and noise == 0.0:
        return x
    s = float(x.std()) or 1.0
    out = gain * x + s * offset
    if noise > 0:
        out = out + s * noise * rng.standard_normal(x.shape)
    return out.astype(x.dtype, copy=False)


def modality_availability(
    n_clients: int,
    modalities: Sequence[str],
    rng: np.random.Generator,
    probability: float,
    explicit: Mapping[int, Sequence[str]] | None,
) -> np.ndarray:
    """Boolean (client, modality) availability: an explicit map of missing modalities per client,
    or each modality missing with ``probability`` (every client keeps at least one modality)."""
    avail = np.ones((n_clients, len(modalities)), dtype=bool)
    if explicit is not None:
        for client, missing in explicit.items():
            c = int(client)
            if not 0 <= c < n_clients:
                raise PartitionError(
                    f"partitioning.missing_modality.map names client {c}, but there are only "
                    f"{n_clients} clients (0..{n_clients - 1})"
                )
            for name in missing:
                if name not in modalities:
                    raise PartitionError(
                        f"partitioning.missing_modality.map: client {c} lists unknown modality "
                        f"'{name}'; the dataset has {list(modalities)}"
                    )
                avail[c, list(modalities).index(name)] = False
        for c in range(n_clients):
            if not avail[c].any():
                raise PartitionError(
                    f"partitioning.missing_modality.map removes every modality from client {c}; "
                    "each client needs at least one"
                )
        return avail
    avail = rng.random((n_clients, len(modalities))) >= probability
    for c in range(n_clients):
        if not avail[c].any():
            avail[c, rng.integers(len(modalities))] = True
    return avail


def natural_clients(
    scheme: str, n_clients: int, client_keys: np.ndarray | None, order: np.ndarray | None
) -> tuple[np.ndarray, list[str]]:
    """Client per row for ``column`` (one client per distinct key, in sorted order) or
    ``time_blocks`` (rows sorted by ``order`` cut into ``n_clients`` contiguous periods);
    returns the client ids and a name per client."""
    if scheme == "column":
        if client_keys is None:
            raise PartitionError(
                "partitioning.scheme 'column' needs ingestion.table.client_column (each row's "
                "client: site, hospital, plant)"
            )
        names, client = np.unique(np.asarray(client_keys).astype(str), return_inverse=True)
        return client.astype(np.int64), [str(k) for k in names]
    if order is None:
        raise PartitionError(
            "partitioning.scheme 'time_blocks' needs ingestion.table.order_column (a sortable "
            "number per row, e.g. a date as a number)"
        )
    n = len(order)
    if n < n_clients:
        raise PartitionError(f"{n} rows cannot make {n_clients} time blocks")
    values = np.asarray(order, np.float64)
    # rows with the same time (several sites on one day) stay in one block: each row's rank is
    # the number of rows strictly before it in time
    rank = np.searchsorted(np.sort(values), values, side="left")
    client = (rank * n_clients) // n
    edges = [float(np.min(np.asarray(order)[client == c])) for c in range(n_clients)]
    return client.astype(np.int64), [f"period from {e:g}" for e in edges]


def last_fraction(
    rows: np.ndarray, fraction: float, order: np.ndarray | None, what: str
) -> np.ndarray:
    """The last ``fraction`` of ``rows`` by ``order`` (at least one, and one left over when
    there are two or more): a chronological hold-out. Rows sharing the cut's time go to the
    hold-out together (unless that would take every row, then none of them does)."""
    if order is None:
        raise PartitionError(
            f"partitioning.{what}_strategy 'last' needs ingestion.table.order_column"
        )
    k = int(round(fraction * len(rows)))
    if len(rows) >= 2:
        k = min(max(k, 1), len(rows) - 1)
    ranked = rows[np.argsort(np.asarray(order)[rows], kind="stable")]
    if not k:
        return ranked[:0]
    values = np.asarray(order)[ranked]
    start = len(ranked) - k
    first_tied = int(np.searchsorted(values, values[start], side="left"))
    if first_tied > 0:
        start = first_tied
    else:
        after = int(np.searchsorted(values, values[start], side="right"))
        start = after if after < len(ranked) else start
    return ranked[start:]


def global_test_mask(
    n: int,
    predefined: np.ndarray | None,
    use_predefined: bool,
    test_fraction: float,
    rng: np.random.Generator,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Which samples form the test pool: the source's split, or a random ``test_fraction``
    (drawn by whole ``groups`` when given)."""
    if predefined is not None and use_predefined:
        return np.asarray(predefined) == TEST
    n_test = int(round(test_fraction * n))
    if n_test < 1 or n_test >= n:
        raise PartitionError(
            f"partitioning.test_fraction={test_fraction} gives {n_test} test sample(s) out of {n}; "
            "choose a fraction that leaves at least one sample on each side"
        )
    mask = np.zeros(n, dtype=bool)
    if groups is None:
        mask[rng.choice(n, n_test, replace=False)] = True
        return mask
    # whole groups (e.g. exact duplicates) go to one side, so no copy leaks across the split
    uniq, inverse = np.unique(np.asarray(groups), return_inverse=True)
    taken = 0
    for g in rng.permutation(len(uniq)):
        if taken >= n_test:
            break
        members = inverse == g
        mask[members] = True
        taken += int(members.sum())
    return mask


def _assign_pool(
    opts: PartitionOptions,
    targets: np.ndarray,
    idx: np.ndarray,
    rng: np.random.Generator,
    dirichlet_p: np.ndarray | None,
    bins: np.ndarray | None,
) -> np.ndarray:
    k = opts.n_clients
    t = targets[idx]
    if opts.scheme == "paper":
        return assign_paper(t, k, rng)
    if opts.scheme in ("iid", "covariate_shift", "missing_modality"):
        return assign_iid(t, k, rng)
    if opts.scheme == "target_shift":
        return assign_target_shift(t, k, rng, opts.shift_strictness)
    if opts.scheme == "quantity_skew":
        return assign_by_proportions(idx, quantity_skew_proportions(k, opts.skew_power), rng)
    if opts.scheme == "dirichlet":
        assert dirichlet_p is not None and bins is not None
        out = np.empty(len(idx), dtype=np.int64)
        pool_bins = bins[idx]
        for b in range(dirichlet_p.shape[0]):
            pos = np.flatnonzero(pool_bins == b)
            if len(pos):
                out[pos] = assign_by_proportions(pos, dirichlet_p[b], rng)
        return out
    raise PartitionError(f"partitioning.scheme '{opts.scheme}' is not one of {SCHEMES}")


def _check_counts(
    opts: PartitionOptions,
    client: np.ndarray,
    split: np.ndarray,
    names: list[str] | None = None,
    need_val: bool | None = None,
) -> str | None:
    val = opts.val_fraction > 0 if need_val is None else need_val
    need = [TRAIN, TEST] + ([VAL] if val else [])
    for c in range(opts.n_clients):
        mine = split[client == c]
        for s in need:
            count = int((mine == s).sum())
            minimum = opts.min_client_size if (s == TRAIN and opts.scheme == "dirichlet") else 1
            if count < minimum:
                who = f"client {c}" + (f" ('{names[c]}')" if names else "")
                return f"{who} gets {count} '{s}' sample(s) (needs at least {minimum})"
    return None


def _fix_hint(opts: PartitionOptions) -> str:
    hints = ["lower partitioning.n_clients"]
    if opts.scheme == "dirichlet":
        hints.insert(0, "raise partitioning.dirichlet.alpha or lower min_client_size")
    if opts.scheme == "quantity_skew":
        hints.insert(0, "lower partitioning.quantity_skew.power")
    hints.append("raise partitioning.val_fraction / test_fraction for empty val/test splits")
    return "; ".join(hints)


def partition(
    sample_ids: np.ndarray,
    targets: np.ndarray,
    modalities: Sequence[str],
    predefined_split: np.ndarray | None,
    opts: PartitionOptions,
    rng: np.random.Generator,
    groups: np.ndarray | None = None,
    client_keys: np.ndarray | None = None,
    order: np.ndarray | None = None,
    n_classes: int = 0,
) -> pd.DataFrame:
    """Assign every sample to a client and a split; returns the ``client_assignments`` table.

    ``n_classes`` > 0: the targets are class codes, and scheme ``dirichlet`` draws each class's
    spread over clients (label skew, the standard non-IID classification split) instead of
    each target quantile bin's.

    ``groups`` (optional, one label per sample): a random test split keeps each group whole.
    ``client_keys`` / ``order`` (optional, from the user's table): the natural client of each
    row (scheme ``column``) and its time (scheme ``time_blocks``, ``*_strategy: last``).

    Where rows go: the test pool is the source's predefined split (``train``/``val``/``test``,
    with ``use_predefined_split``), or the last ``test_fraction`` by ``order``
    (``test_strategy: last``; per client for the natural schemes, overall otherwise), or a
    random ``test_fraction``. Natural schemes keep every row, test rows included, with its own
    client; the others assign the train and test pools separately by the same rule. ``val`` is
    the predefined ``val`` rows, else the last (``val_strategy: last``) or a random
    ``val_fraction`` of each client's training rows.
    """
    if opts.scheme not in SCHEMES:
        raise PartitionError(f"partitioning.scheme '{opts.scheme}' is not one of {SCHEMES}")
    for what, value in (("test", opts.test_strategy), ("val", opts.val_strategy)):
        if value not in SPLIT_STRATEGIES:
            raise PartitionError(
                f"partitioning.{what}_strategy '{value}' is not one of {SPLIT_STRATEGIES}"
            )
    if opts.test_strategy == "last" and opts.val_strategy == "random" and opts.val_fraction > 0:
        logger.warning(
            "partitioning: the test split is chronological (test_strategy: last) but validation "
            "is random (val_strategy: random): validation will not show a later period, so "
            "early stopping and the regressor choice cannot see a trend; set val_strategy: last"
        )
    if opts.scheme in NATURAL:
        return _partition_natural(
            sample_ids, targets, modalities, predefined_split, opts, rng, client_keys, order
        )
    n = len(targets)
    if opts.n_clients < 1:
        raise PartitionError(f"partitioning.n_clients must be >= 1, got {opts.n_clients}")
    need = 3 if opts.val_fraction > 0 else 2
    if n < opts.n_clients * need:
        fix = (
            "lower partitioning.n_clients"
            if opts.n_clients > 1
            else "the data needs more rows (a single client still needs a train, "
            + ("val and test row)" if need == 3 else "and a test row)")
        )
        raise PartitionError(
            f"{n} sample(s) cannot give {opts.n_clients} client(s) "
            f"{'a train, val and test' if need == 3 else 'a train and a test'} sample each; {fix}"
        )
    predefined = predefined_split if opts.use_predefined_split else None
    if predefined is None and opts.test_strategy == "last":
        is_test = np.zeros(n, dtype=bool)
        is_test[last_fraction(np.arange(n), opts.test_fraction, order, "test")] = True
    else:
        is_test = global_test_mask(
            n, predefined_split, opts.use_predefined_split, opts.test_fraction, rng, groups
        )
    predefined_val = (
        np.asarray(predefined).astype(str) == VAL if predefined is not None else np.zeros(n, bool)
    )
    train_idx, test_idx = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise PartitionError(
            f"the {'predefined' if predefined_split is not None else 'random'} split leaves "
            f"{len(train_idx)} train and {len(test_idx)} test samples; both must be non-empty "
            "(set partitioning.use_predefined_split=false or change test_fraction)"
        )
    tries = opts.max_tries if opts.scheme == "dirichlet" else 1
    problem = None
    for _ in range(tries):
        dirichlet_p = bins = None
        if opts.scheme == "dirichlet":
            if n_classes:
                bins, n_bins = np.asarray(targets).astype(np.int64), n_classes
            else:
                bins = target_bins(targets, targets[train_idx], opts.dirichlet_bins)
                n_bins = opts.dirichlet_bins
            dirichlet_p = rng.dirichlet(np.full(opts.n_clients, opts.dirichlet_alpha), n_bins)
        client = np.empty(n, dtype=np.int64)
        client[train_idx] = _assign_pool(opts, targets, train_idx, rng, dirichlet_p, bins)
        client[test_idx] = _assign_pool(opts, targets, test_idx, rng, dirichlet_p, bins)
        split = _splits(opts, client, is_test, predefined_val, order, rng)
        problem = _check_counts(opts, client, split, need_val=_needs_val(opts, predefined_val))
        if problem is None:
            break
    if problem is not None:
        raise PartitionError(
            f"partitioning scheme '{opts.scheme}' with {opts.n_clients} clients: {problem}"
            f"{f' after {tries} tries' if tries > 1 else ''}. Try: {_fix_hint(opts)}"
        )

    return _assignments(sample_ids, client, split, modalities, opts, rng)


def _needs_val(opts: PartitionOptions, predefined_val: np.ndarray) -> bool:
    return bool(predefined_val.any()) or opts.val_fraction > 0


def _splits(
    opts: PartitionOptions,
    client: np.ndarray,
    is_test: np.ndarray,
    predefined_val: np.ndarray,
    order: np.ndarray | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """train / val / test per row: the test mask, the predefined val rows, or each client's
    val carved (randomly or last by order) from its training rows."""
    split = np.where(is_test, TEST, TRAIN).astype(object)
    if predefined_val.any():
        split[predefined_val & ~is_test] = VAL
        return split
    if opts.val_fraction <= 0:
        return split
    for c in range(opts.n_clients):
        mine = np.flatnonzero((client == c) & ~is_test)
        if opts.val_strategy == "last":
            split[last_fraction(mine, opts.val_fraction, order, "val")] = VAL
            continue
        n_val = int(round(opts.val_fraction * len(mine)))
        if len(mine) >= 2:
            n_val = min(max(n_val, 1), len(mine) - 1)
        split[rng.choice(mine, n_val, replace=False) if n_val else []] = VAL
    return split


def _partition_natural(
    sample_ids, targets, modalities, predefined_split, opts, rng, client_keys, order
) -> pd.DataFrame:
    """``column`` / ``time_blocks``: the data gives each row its client."""
    client, names = natural_clients(opts.scheme, opts.n_clients, client_keys, order)
    opts = replace(opts, n_clients=len(names))
    n = len(targets)
    predefined = predefined_split if opts.use_predefined_split else None
    if predefined is not None:
        labels = np.asarray(predefined).astype(str)
        is_test, predefined_val = labels == TEST, labels == VAL
    else:
        is_test, predefined_val = np.zeros(n, bool), np.zeros(n, bool)
        for c in range(opts.n_clients):
            mine = np.flatnonzero(client == c)
            if opts.test_strategy == "last":
                held = last_fraction(mine, opts.test_fraction, order, "test")
            else:
                k = min(max(int(round(opts.test_fraction * len(mine))), 1), max(len(mine) - 1, 0))
                held = rng.choice(mine, k, replace=False) if k else mine[:0]
            is_test[held] = True
    split = _splits(opts, client, is_test, predefined_val, order, rng)
    problem = _check_counts(opts, client, split, names, _needs_val(opts, predefined_val))
    if problem is not None:
        fix = (
            "merge small clients in the client column, or drop them"
            if opts.scheme == "column"
            else "use fewer partitioning.n_clients (time blocks)"
        )
        raise PartitionError(f"partitioning scheme '{opts.scheme}': {problem}. Try: {fix}")
    out = _assignments(sample_ids, client, split, modalities, opts, rng)
    out["client_name"] = np.asarray(names, dtype=object)[client]
    return out


def _assignments(sample_ids, client, split, modalities, opts, rng) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "sample_id": np.asarray(sample_ids).astype(str),
            "client": client,
            "split": split.astype(str),
        }
    )
    avail = np.ones((opts.n_clients, len(modalities)), dtype=bool)
    if opts.scheme == "missing_modality":
        avail = modality_availability(
            opts.n_clients, modalities, rng, opts.missing_probability, opts.missing_map
        )
    for j, name in enumerate(modalities):
        out[f"available_{name}"] = avail[client, j]
    if opts.scheme == "covariate_shift":
        tf = covariate_transforms(
            opts.n_clients, rng, opts.gain_std, opts.offset_std, opts.noise_std
        )
        out = out.merge(tf, on="client", how="left", validate="many_to_one")
    else:  # identity transform: same schema for every scheme
        out = out.assign(covariate_gain=1.0, covariate_offset=0.0, covariate_noise=0.0)
    return out


def summarise(
    assignments: pd.DataFrame, targets: pd.Series, modalities: Sequence[str]
) -> pd.DataFrame:
    """Per client and split: counts, target mean/std/min/max and available modalities."""
    df = assignments.assign(target=assignments["sample_id"].map(targets).to_numpy())
    rows = []
    for (client, split), g in df.groupby(["client", "split"], sort=True):
        avail = [m for m in modalities if g[f"available_{m}"].all()]
        rows.append(
            {
                "client": int(client),
                "split": split,
                "n": len(g),
                "target_mean": float(g["target"].mean()),
                "target_std": float(g["target"].std(ddof=0)),
                "target_min": float(g["target"].min()),
                "target_max": float(g["target"].max()),
                "modalities": ",".join(avail),
            }
        )
    order = {TRAIN: 0, VAL: 1, TEST: 2}
    return (
        pd.DataFrame(rows)
        .sort_values(["client", "split"], key=lambda s: s.map(order) if s.name == "split" else s)
        .reset_index(drop=True)
    )
