"""Which downstream regressor represents a method: validation MSE, made safe for shifted data.

Rule ``val``: per method, the regressor with the lowest pooled validation MSE.

Rule ``auto`` (the default): the same, except when the validation targets leave the training
range. Then a regressor whose predictions cannot leave that range either -- a random forest and
the mean predict averages of training targets, an RBF Gaussian process reverts to the training
mean away from its data -- would be chosen for a period it cannot reach, so only regressors with
linear tails (ridge, PLS, the model's own linear + MLP head) stay candidates. "Leaving the range"
is measured on validation rows only (each against its own client's training targets), never on
test rows: with ``val_strategy: last`` the validation period stands in for the test period.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

# predictions follow a trend beyond the training targets; every other regressor is bounded
LINEAR_TAILS = frozenset({"ridge", "pls", "head"})
RULES = ("auto", "val")


@dataclass(frozen=True)
class SelectionRule:
    """How a method's regressor is chosen (see the module docstring)."""

    rule: Literal["auto", "val"] = "auto"
    max_outside_share: float = 0.1

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"selection rule '{self.rule}' is not one of {RULES}")
        if not 0.0 <= self.max_outside_share <= 1.0:
            raise ValueError(f"max_outside_share must lie in [0, 1], got {self.max_outside_share}")


def base_regressor(name: str) -> str:
    """``ridge_pooled`` -> ``ridge``: the pooled variant extrapolates like its base."""
    return name.removesuffix("_pooled")


def outside_share(features: pd.DataFrame) -> float:
    """Share of validation rows whose target lies outside its own client's training range
    (``features``: client, split, target). NaN when there are no validation rows."""
    n_out = n_val = 0
    for _, g in features.groupby("client", sort=True):
        train = g.loc[g["split"] == "train", "target"].to_numpy(np.float64)
        val = g.loc[g["split"] == "val", "target"].to_numpy(np.float64)
        if len(val) == 0 or len(train) == 0:
            continue
        n_out += int(((val < train.min()) | (val > train.max())).sum())
        n_val += len(val)
    return n_out / n_val if n_val else float("nan")


def choose_regressors(
    evaluation_metrics: pd.DataFrame, share: float, rule: SelectionRule, score: str = "mse"
) -> pd.DataFrame:
    """Per method: the chosen regressor, its pooled validation MSE, and why (a sentence).

    ``evaluation_metrics``: method, regressor, split, scope, mse rows. Columns out: method,
    regressor, val_mse, rule, val_outside_share, restricted (True where bounded regressors were
    set aside), reason. ``score``: the lower-is-better column to choose by (``log_loss`` for a
    classifier; ``val_mse`` then holds it)."""
    label = "MSE" if score == "mse" else score.replace("_", "-")
    val = evaluation_metrics[
        (evaluation_metrics["split"] == "val") & (evaluation_metrics["scope"] == "pooled")
    ]
    shifted = rule.rule == "auto" and np.isfinite(share) and share > rule.max_outside_share
    rows = []
    for method, unsorted in val.groupby("method", sort=True):
        g = unsorted.sort_values([score, "regressor"])
        candidates = g
        restricted = False
        if shifted:
            linear = g[g["regressor"].map(base_regressor).isin(LINEAR_TAILS)]
            if len(linear):
                restricted = len(linear) < len(g)
                candidates = linear
        best = candidates.iloc[0]
        lowest = g.iloc[0]
        if not shifted:
            reason = f"lowest validation {label}"
        elif candidates is g:
            reason = (
                "lowest validation MSE (validation targets leave the training range, but no "
                "regressor with linear tails was evaluated for this method)"
            )
        elif best["regressor"] == lowest["regressor"]:
            reason = "lowest validation MSE among regressors with linear tails"
        else:
            reason = (
                f"lowest validation MSE among regressors with linear tails ({lowest['regressor']} "
                f"had a lower validation MSE, {lowest['mse']:.4g}, but cannot predict outside "
                "the training targets)"
            )
        rows.append(
            {
                "method": method,
                "regressor": best["regressor"],
                "val_mse": float(best[score]),
                "rule": rule.rule,
                "val_outside_share": float(share),
                "restricted": bool(restricted),
                "reason": reason,
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "method",
            "regressor",
            "val_mse",
            "rule",
            "val_outside_share",
            "restricted",
            "reason",
        ],
    )


def describe(rule: SelectionRule, share: float) -> str:
    """One sentence for the report: which rule chose the regressors, and whether it fired."""
    pct = "no validation rows" if not np.isfinite(share) else f"{100 * share:.1f} %"
    if rule.rule == "val":
        return (
            "Each method's regressor is the one with the lowest pooled validation MSE "
            f"(rule 'val'; validation targets outside their client's training range: {pct})."
        )
    fired = np.isfinite(share) and share > rule.max_outside_share
    return (
        "Each method's regressor is the one with the lowest pooled validation MSE, restricted to "
        "regressors with linear tails (ridge, PLS, the model's head) when more than "
        f"{100 * rule.max_outside_share:.0f} % of validation targets lie outside their client's "
        f"training range (rule 'auto'; here {pct}, so the restriction "
        f"{'applies' if fired else 'does not apply'})."
    )
