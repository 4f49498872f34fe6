"""Delete old versions of versioned datasets: ``python -m fdrmfl_pipeline.prune --keep 3``.

Kedro keeps every version forever (``<filepath>/<timestamp>/<file>``). This keeps the newest
``--keep`` timestamps of every versioned dataset under ``data/`` and removes the rest.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
from pathlib import Path

VERSION_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}\.\d{2}\.\d{2}\.\d{3}Z$")
logger = logging.getLogger("fdrmfl_pipeline.prune")


def prune(root: Path, keep: int, dry_run: bool = False) -> list[Path]:
    """Remove all but the newest ``keep`` version folders of each versioned dataset under ``root``."""
    if keep < 1:
        raise ValueError(f"--keep must be >= 1, got {keep}")
    removed: list[Path] = []
    datasets = {p.parent for p in root.rglob("*") if p.is_dir() and VERSION_DIR.match(p.name)}
    for ds in sorted(datasets):
        versions = sorted(p for p in ds.iterdir() if p.is_dir() and VERSION_DIR.match(p.name))
        for old in versions[:-keep]:
            removed.append(old)
            if not dry_run:
                shutil.rmtree(old)
    return removed


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", type=Path, default=Path("data"))
    ap.add_argument("--keep", type=int, default=3)
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    removed = prune(args.root, args.keep, args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for p in removed:
        logger.info("%s %s", verb, p)
    logger.info(
        "%s %d old version(s); kept the newest %d of each dataset", verb, len(removed), args.keep
    )


if __name__ == "__main__":
    main()
