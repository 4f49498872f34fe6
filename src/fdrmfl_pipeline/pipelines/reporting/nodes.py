"""Reporting nodes: figures (saved as PNG through the catalog) and a self-contained HTML report.

Model choice for display (which regressor represents a method) uses the ``val`` split only.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np
import pandas as pd

from fdrmfl_pipeline.params import ReportingParams

LOSS_COLUMNS = (
    "train_loss",
    "loss_mse",
    "loss_ce",
    "loss_mi",
    "loss_skl",
    "loss_con",
    "val_mse",
)


def is_classification(frame: pd.DataFrame) -> bool:
    """Metrics or predictions of a classification task (class probabilities / accuracy)."""
    return "accuracy" in frame.columns or "p0" in frame.columns


def chosen(regressor_choice: pd.DataFrame) -> dict[str, str]:
    """method -> the regressor that represents it (the evaluation stage's choice on val)."""
    return dict(zip(regressor_choice["method"], regressor_choice["regressor"], strict=True))


def metrics_table(evaluation_metrics: pd.DataFrame, split: str, value: str = "mse") -> pd.DataFrame:
    """``value`` (MSE, or R²) of every (method, regressor) per client and pooled, on ``split``."""
    m = evaluation_metrics[evaluation_metrics["split"] == split]
    table = m.pivot_table(index=["method", "regressor"], columns="client", values=value)
    table.columns = ["pooled" if c == -1 else f"client {c}" for c in table.columns]
    cols = [c for c in table.columns if c != "pooled"] + (
        ["pooled"] if "pooled" in table.columns else []
    )
    higher = value in ("r2", "accuracy", "macro_f1", "roc_auc")
    return table[cols].sort_values(cols[-1], ascending=not higher)


def _new_figure(n_panels: int, width: float = 3.4, height: float = 2.7) -> tuple[Any, np.ndarray]:
    from matplotlib.figure import Figure

    ncols = min(n_panels, 3)
    nrows = int(np.ceil(n_panels / ncols))
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes


def plot_loss_curves(
    training_history: pd.DataFrame,
) -> Any:
    """Per-round loss terms and validation MSE, one line per client."""
    cols = [c for c in LOSS_COLUMNS if c in training_history and training_history[c].notna().any()]
    if not cols:  # e.g. local DP: the clients release no losses and no validation errors
        fig, axes = _new_figure(1)
        axes[0].text(
            0.5, 0.5, "no per-round losses or validation\nerrors were released", ha="center"
        )
        axes[0].set_axis_off()
        return fig
    fig, axes = _new_figure(len(cols))
    for ax, col in zip(axes, cols, strict=False):
        for client, g in training_history.groupby("client"):
            ax.plot(g["round"], g[col], marker="o", ms=3, label=f"client {client}")
        ax.set_title(col)
        ax.set_xlabel("round")
    axes[0].legend(fontsize=7)
    fig.suptitle("Training history")
    return fig


def plot_pred_vs_actual(
    predictions: pd.DataFrame, regressor_choice: pd.DataFrame, params: ReportingParams
) -> Any:
    """Predicted vs actual per client for the trained model's chosen regressor (a classifier:
    its confusion matrix and ROC curves over every client's rows)."""
    methods = predictions["method"].unique()
    reg = chosen(regressor_choice).get(methods[0], "head") if len(methods) else "head"
    sel = predictions[(predictions["regressor"] == reg) & (predictions["split"] == params.split)]
    if is_classification(predictions):
        return _confusion_and_roc(sel, f"{methods[0] if len(methods) else ''} + {reg}", params)
    clients = sorted(sel["client"].unique())
    fig, axes = _new_figure(max(1, len(clients)))
    for ax, c in zip(axes, clients, strict=False):
        g = sel[sel["client"] == c]
        ax.scatter(g["y_true"], g["y_pred"], s=8, alpha=0.6)
        lo, hi = (
            float(min(g["y_true"].min(), g["y_pred"].min())),
            float(max(g["y_true"].max(), g["y_pred"].max())),
        )
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_title(f"client {c}")
        ax.set_xlabel("actual")
        ax.set_ylabel("predicted")
    fig.suptitle(f"{methods[0] if len(methods) else ''} + {reg}: {params.split} split")
    return fig


def _confusion_and_roc(sel: pd.DataFrame, label: str, params: ReportingParams) -> Any:
    """Row-normalised confusion matrix and one-vs-rest ROC curves of ``sel``'s predictions."""
    from sklearn.metrics import confusion_matrix, roc_curve

    pcols = sorted(
        (c for c in sel.columns if c[:1] == "p" and c[1:].isdigit()), key=lambda c: int(c[1:])
    )
    pcols = [c for c in pcols if sel[c].notna().any()]
    k = len(pcols)
    y = sel["y_true"].to_numpy().astype(int)
    pred = sel["y_pred"].to_numpy().astype(int)
    fig, axes = _new_figure(2, width=4.2, height=3.6)
    cm = confusion_matrix(y, pred, labels=list(range(k))).astype(float)
    cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    axes[0].imshow(cm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            axes[0].text(j, i, f"{cm[i, j]:.2f}", ha="center", va="center", fontsize=8)
    axes[0].set_xticks(range(k))
    axes[0].set_yticks(range(k))
    axes[0].set_xlabel("predicted class")
    axes[0].set_ylabel("true class")
    axes[0].set_title("confusion (rows sum to 1)")
    for c in range(k):
        if 0 < (y == c).sum() < len(y):
            fpr, tpr, _ = roc_curve(y == c, sel[pcols[c]].to_numpy())
            axes[1].plot(fpr, tpr, lw=1.2, label=f"class {c}")
    axes[1].plot([0, 1], [0, 1], "k--", lw=0.8)
    axes[1].set_xlabel("false positive rate")
    axes[1].set_ylabel("true positive rate")
    axes[1].set_title("ROC, one class vs the rest")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"{label}: {params.split} split, all clients")
    return fig


def plot_metric_bars(
    evaluation_metrics: pd.DataFrame, regressor_choice: pd.DataFrame, params: ReportingParams
) -> Any:
    """Per-client MSE (a classifier: accuracy) across methods (each with its chosen regressor)."""
    value, label = (
        ("accuracy", "accuracy") if is_classification(evaluation_metrics) else ("mse", "MSE")
    )
    m = evaluation_metrics.merge(
        regressor_choice[["method", "regressor"]], on=["method", "regressor"]
    )
    m = m[(m["split"] == params.split) & (m["scope"] == "client")]
    pivot = m.pivot_table(index="client", columns="method", values=value)
    fig, axes = _new_figure(1, width=max(6.0, 0.5 * pivot.size), height=3.2)
    ax = axes[0]
    width = 0.8 / max(1, pivot.shape[1])
    for j, method in enumerate(pivot.columns):
        ax.bar(np.arange(len(pivot)) + j * width, pivot[method], width, label=method)
    ax.set_xticks(np.arange(len(pivot)) + 0.4 - width / 2, [f"client {c}" for c in pivot.index])
    ax.set_ylabel(f"{params.split} {label}")
    # outside the axes: a legend must never hide a bar
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle(f"Per-client {label} by method (each with its chosen regressor)")
    return fig


def plot_z_projection(
    extracted_features: pd.DataFrame,
) -> Any:
    """2-D PCA of Z (fitted on train rows) coloured by the target."""
    from sklearn.decomposition import PCA

    cols = [c for c in extracted_features.columns if c.startswith("z_")]
    train = extracted_features[extracted_features["split"] == "train"]
    pca = PCA(n_components=min(2, len(cols))).fit(train[cols].to_numpy())
    xy = pca.transform(extracted_features[cols].to_numpy())
    if xy.shape[1] == 1:
        xy = np.hstack([xy, np.zeros_like(xy)])
    fig, axes = _new_figure(1, width=5.5, height=4.2)
    sc = axes[0].scatter(xy[:, 0], xy[:, 1], c=extracted_features["target"], s=6, cmap="viridis")
    fig.colorbar(sc, ax=axes[0], label="target")
    axes[0].set_xlabel("PC 1 of Z")
    axes[0].set_ylabel("PC 2 of Z")
    fig.suptitle("Fused features Z, 2-D projection")
    return fig


# what a target is measured in, per source (the table source: the user's own column)
UNITS = {
    "synthetic": "units of the simulated response y",
    "tecator": "% (w/w) of the meat sample",
    "corn": "% of the corn kernel",
}
# methods that are not a federated alternative to the model: the train-mean predictor is the
# floor, raw_pooled needs all clients' raw data in one place
NOT_BASELINES = {"client_mean", "client_prior", "raw_pooled"}


def dataset_label(parameters: dict) -> tuple[str, str]:
    """(data set and target, the target's unit) from the run's ingestion parameters."""
    ing = parameters.get("ingestion")
    ing = ing.model_dump() if hasattr(ing, "model_dump") else dict(ing or {})
    source = ing.get("source", "")
    if source == "synthetic":
        return f"simulation {ing['synthetic']['function']}", UNITS["synthetic"]
    if source in ("tecator", "corn"):
        return f"{source} {ing[source]['target']}", UNITS[source]
    return (
        f"your table, target '{ing.get('table', {}).get('target', '')}'",
        "the target column's units",
    )


def verdict(
    evaluation_metrics: pd.DataFrame, regressor_choice: pd.DataFrame, model_method: str, split: str
) -> str:
    """One sentence: the model (its chosen regressor) against the best baseline on validation
    (its chosen regressor) and the train-mean predictor, on ``split``, pooled over every
    client's rows."""
    best = pd.Series(chosen(regressor_choice))
    pooled = evaluation_metrics[
        (evaluation_metrics["scope"] == "pooled") & (evaluation_metrics["split"] == split)
    ]

    def row(method: str) -> pd.Series | None:
        if method not in best.index:
            return None
        r = pooled[(pooled["method"] == method) & (pooled["regressor"] == best[method])]
        return None if r.empty else r.iloc[0]

    ours = row(model_method)
    if ours is None:
        return f"No {split} metrics for {model_method}."
    rivals = [m for m in best.index if m != model_method and m not in NOT_BASELINES]
    if "accuracy" in ours.index:
        return _class_verdict(ours, rivals, regressor_choice, row, model_method, split)
    text = (
        f"{model_method} + {ours['regressor']}: {split} MSE {ours['mse']:.4g} "
        f"(RMSE {ours['rmse']:.4g}, R² {ours['r2']:.3f})"
    )
    if rivals:
        v = regressor_choice[regressor_choice["method"].isin(rivals)]
        if not v.empty:
            rival = v.sort_values(["val_mse", "method"])["method"].iloc[0]
            b = row(rival)
            if b is not None:
                change = 100.0 * (ours["mse"] - b["mse"]) / b["mse"]
                text += (
                    f"; the best baseline on validation, {rival} + {b['regressor']}: MSE "
                    f"{b['mse']:.4g} (R² {b['r2']:.3f}), so {abs(change):.1f} % "
                    f"{'lower' if change < 0 else 'higher'} for {model_method}"
                )
    mean = row("client_mean")
    if mean is not None:
        text += f"; each client's own training mean (client_mean): MSE {mean['mse']:.4g}"
    return text + "."


def _class_verdict(ours, rivals, regressor_choice, row, model_method: str, split: str) -> str:
    def says(r) -> str:
        return (
            f"accuracy {r['accuracy']:.3f}, macro-F1 {r['macro_f1']:.3f}, ROC-AUC "
            f"{r['roc_auc']:.3f}, log-loss {r['log_loss']:.4g}, ECE {r['ece']:.3f}"
        )

    text = f"{model_method} + {ours['regressor']}: {split} {says(ours)}"
    v = regressor_choice[regressor_choice["method"].isin(rivals)]
    if not v.empty:
        rival = v.sort_values(["val_mse", "method"])["method"].iloc[0]
        b = row(rival)
        if b is not None:
            text += f"; the best baseline on validation (log-loss), {rival} + {b['regressor']}: {says(b)}"
    prior = row("client_prior")
    if prior is not None:
        text += f"; each client's own class frequencies (client_prior): accuracy {prior['accuracy']:.3f}"
    return text + "."


def client_identity_note(evaluation_metrics: pd.DataFrame, split: str) -> str:
    """When each client's own training mean already explains much of the pooled variance, the
    pooled R² of every method is inflated by client identity: say so."""
    m = evaluation_metrics[
        (evaluation_metrics["method"] == "client_mean")
        & (evaluation_metrics["scope"] == "pooled")
        & (evaluation_metrics["split"] == split)
    ]
    if m.empty or not np.isfinite(m["r2"].iloc[0]) or m["r2"].iloc[0] < 0.1:
        return ""
    return (
        f"Note: each client's own training mean alone reaches pooled R² {m['r2'].iloc[0]:.3f} "
        f"on {split}: the clients' targets differ, so pooled R² is inflated by client identity. "
        "Compare methods by their per-client R² (table below) and against client_mean."
    )


def privacy_note(training_history: pd.DataFrame) -> str:
    """What the run promises about privacy, from the history the accountant wrote."""
    secure = bool(
        "secure_aggregation" in training_history
        and training_history["secure_aggregation"].fillna(False).astype(bool).any()
    )
    if "epsilon" not in training_history or training_history["epsilon"].isna().all():
        if secure:
            return (
                "Privacy: raw data stayed on the clients, and with secure aggregation "
                "(pairwise masking) the server received only sums over clients: the scaler "
                "statistics, the warm start's answers, each round's model and the validation "
                "error (the per-client rows of the training history hold those means). Each "
                "client's row count was visible. No differential privacy: the sums themselves "
                "are exact."
            )
        return (
            "Privacy: raw data stayed on the clients; no differential privacy "
            "(training.privacy.mode off), so the server saw each client's model updates."
        )
    last = training_history.sort_values("round").iloc[-1]
    if str(last.get("dp_mode", "central")) == "local":
        return (
            f"Privacy: local differential privacy on the client level, (ε = "
            f"{last['epsilon']:.3g}, δ = {last['delta']:.3g}) per client for the whole training "
            f"job after {int(last['round'])} rounds (RDP accountant of the Gaussian mechanism; "
            "each client clipped its own model change and added Gaussian noise before sending "
            "it, so the server needed no trust). The downstream regressors and this report's "
            "metrics are computed on the clients' own rows and are not covered."
        )
    return (
        f"Privacy: client-level differential privacy, (ε = {last['epsilon']:.3g}, "
        f"δ = {last['delta']:.3g}) for the whole training job after {int(last['round'])} "
        "rounds (RDP accountant of the sampled Gaussian mechanism; clipped model changes, "
        "Gaussian noise on their sum at the server). The downstream regressors and this "
        "report's metrics are computed on the clients' own rows and are not covered."
    )


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode()


def _table_html(table: pd.DataFrame, higher_is_better: bool = False) -> str:
    best = {c: (table[c].max() if higher_is_better else table[c].min()) for c in table.columns}
    head = "".join(
        f"<th>{html.escape(str(c))}</th>" for c in ["method", "regressor", *table.columns]
    )
    body = []
    for (method, reg), row in table.iterrows():
        cells = [f"<td>{html.escape(str(method))}</td>", f"<td>{html.escape(str(reg))}</td>"]
        for c in table.columns:
            v = row[c]
            txt = "" if pd.isna(v) else f"{v:.5g}"
            cells.append(f"<td class='best'>{txt}</td>" if v == best[c] else f"<td>{txt}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _selection_note(regressor_choice: pd.DataFrame, parameters: dict) -> str:
    from fdrmfl_pipeline.core.selection import SelectionRule, describe

    ev = parameters.get("evaluation")
    ev = ev.model_dump() if hasattr(ev, "model_dump") else dict(ev or {})
    rule = SelectionRule(**ev.get("selection", {}))
    share = (
        float(regressor_choice["val_outside_share"].iloc[0])
        if len(regressor_choice)
        else float("nan")
    )
    part = parameters.get("partitioning")
    part = part.model_dump() if hasattr(part, "model_dump") else dict(part or {})
    val_rule = (
        "each client's last training rows by the order column (val_strategy: last)"
        if part.get("val_strategy") == "last"
        else "a random share of each client's training rows (val_strategy: random)"
    )
    return f"{describe(rule, share)} Validation rows: {val_rule}."


def _choice_html(regressor_choice: pd.DataFrame, score: str = "MSE") -> str:
    head = f"<tr><th>method</th><th>regressor</th><th>val {score} (pooled)</th><th>why</th></tr>"
    body = "".join(
        f"<tr><td>{html.escape(str(r.method))}</td><td>{html.escape(str(r.regressor))}</td>"
        f"<td>{r.val_mse:.5g}</td><td style='text-align:left'>{html.escape(str(r.reason))}</td></tr>"
        for r in regressor_choice.itertuples()
    )
    return f"<table>{head}{body}</table>"


def _anomaly_html(anomaly_metrics: pd.DataFrame, split: str) -> list[str]:
    """The anomaly scores against the labelled anomalies: pooled and per-client ROC-AUC and
    PR-AUC on ``split``."""
    m = anomaly_metrics[anomaly_metrics["split"] == split]
    pooled = m[m["scope"] == "pooled"].set_index(["method", "score"])
    best = pooled["roc_auc"].idxmax() if len(pooled) else None
    text = (
        f"Best pooled ROC-AUC on {split}: {best[0]} ({best[1]}) {pooled.loc[best, 'roc_auc']:.3f}, "
        f"PR-AUC {pooled.loc[best, 'pr_auc']:.3f}, with {100 * pooled.loc[best, 'anomaly_share']:.1f} % "
        "of the rows labelled anomalous (PR-AUC of a random score)."
        if best is not None
        else ""
    )
    out = [f"<h2>Anomaly scores on the {split} split</h2><p>{html.escape(text)}</p>"]
    for value in ("roc_auc", "pr_auc"):
        table = m.pivot_table(index=["method", "score"], columns="client", values=value)
        table.columns = ["pooled" if c == -1 else f"client {c}" for c in table.columns]
        out += [f"<h3>{value.replace('_', '-').upper()}</h3>", _table_html(table, True)]
    return out


def build_report(
    evaluation_metrics: pd.DataFrame,
    regressor_choice: pd.DataFrame,
    training_history: pd.DataFrame,
    predictions: pd.DataFrame,
    extracted_features: pd.DataFrame,
    client_assignments: pd.DataFrame,
    multimodal_dataset: Any,
    parameters: dict,
    params: ReportingParams,
    anomaly_metrics: pd.DataFrame | None = None,
) -> str:
    """One self-contained HTML page (figures embedded as PNG) summarising the run: a verdict
    first, then the table and the figures."""
    import yaml

    from fdrmfl_pipeline.pipelines.partitioning.nodes import plot_client_targets

    figures = {
        "Clients' targets (the partition)": plot_client_targets(
            client_assignments, multimodal_dataset
        ),
        "Training history (loss terms and validation MSE per round)": plot_loss_curves(
            training_history
        ),
        (
            "Confusion matrix and ROC" if is_classification(predictions) else "Predicted vs actual"
        ): plot_pred_vs_actual(predictions, regressor_choice, params),
        "Per-client score by method": plot_metric_bars(
            evaluation_metrics, regressor_choice, params
        ),
        "Z projection": plot_z_projection(extracted_features),
    }
    exp = evaluation_metrics["experiment"].iloc[0] if len(evaluation_metrics) else ""
    classes = is_classification(evaluation_metrics)
    first, second = ("accuracy", "roc_auc") if classes else ("mse", "r2")
    table = metrics_table(evaluation_metrics, params.split, first)
    plain = {k: (v.model_dump() if hasattr(v, "model_dump") else v) for k, v in parameters.items()}
    data_name, unit = dataset_label(parameters)
    model_method = str(predictions["method"].iloc[0]) if len(predictions) else ""
    selection_note = _selection_note(regressor_choice, parameters)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(params.title)}</title><style>body{{font-family:sans-serif;margin:2em;}}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;"
        "text-align:right}td.best{font-weight:bold;background:#dfd}pre{background:#f6f6f6;padding:1em;"
        "font-size:12px;max-height:30em;overflow:auto}img{max-width:100%}</style></head><body>",
        f"<h1>{html.escape(params.title)}</h1>",
        f"<p class='verdict'><b>{html.escape(verdict(evaluation_metrics, regressor_choice, model_method, params.split))}</b></p>",
        f"<p class='privacy'>{html.escape(privacy_note(training_history))}</p>",
        f"<p>Data: <b>{html.escape(data_name)}</b>, target in {html.escape(unit)}; experiment "
        f"<b>{html.escape(str(exp))}</b>. "
        + (
            "Accuracy (share of rows whose most probable class is right)"
            if classes
            else "MSE in the target's units (squared)"
        )
        + f" on the <b>{params.split}</b> split; best per column in bold. <i>pooled</i>: the metric over "
        "every client's test rows together (each client's model or features, no pooled "
        "training), not a model trained on pooled data.</p>",
        _table_html(table, higher_is_better=classes),
        f"<p>{html.escape(client_identity_note(evaluation_metrics, params.split))}</p>",
        f"<h3>{'ROC-AUC' if classes else 'R²'} on the {params.split} split, per client and "
        "pooled</h3>",
        _table_html(metrics_table(evaluation_metrics, params.split, second), higher_is_better=True),
        f"<h3>Which regressor represents each method</h3><p>{html.escape(selection_note)}</p>",
        _choice_html(regressor_choice, "log-loss" if classes else "MSE"),
    ]
    if anomaly_metrics is not None and len(anomaly_metrics):
        parts += _anomaly_html(anomaly_metrics, params.split)
    for title, fig in figures.items():
        parts.append(
            f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='data:image/png;base64,{_png(fig)}'>"
        )
    parts.append(
        "<h2>Parameters</h2><pre>" + html.escape(yaml.safe_dump(plain, sort_keys=False)) + "</pre>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)
