"""Print the latest tuned parameters as a ``kedro run --params`` string.

kedro run --params "$(python -m fdrmfl_pipeline.best_params)"          # train with them
python -m fdrmfl_pipeline.best_params --file data/06_models/best_params.yml/<version>/best_params.yml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import yaml

DEFAULT_DIR = Path("data/06_models/best_params.yml")


def latest(directory: Path = DEFAULT_DIR) -> Path:
    files = sorted(directory.glob("*/best_params.yml"))
    if not files:
        raise FileNotFoundError(
            f"no best_params version under {directory}; run the tuning pipeline first"
        )
    return files[-1]


def _fmt(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):  # positional notation: YAML reads "1e-05" as a string
        return np.format_float_positional(v, trim="-")
    return str(v)


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, object] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def to_params_string(best: dict) -> str:
    """``training.group.k=v,...`` for every tuned training parameter."""
    flat = flatten(best.get("training", {}), "training.")
    return ",".join(f"{k}={_fmt(v)}" for k, v in sorted(flat.items()))


def parse_params_string(text: str | None) -> dict:
    """The inverse: ``a.b=1,c=x`` (a ``kedro run --params`` string) -> nested dict, values parsed
    as YAML scalars."""
    out: dict = {}
    for item in filter(None, (text or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"params item '{item}' is not key=value")
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--file", type=Path, default=None)
    args = ap.parse_args(argv)
    best = yaml.safe_load((args.file or latest()).read_text())
    sys.stdout.write(to_params_string(best) + "\n")


if __name__ == "__main__":
    main()
