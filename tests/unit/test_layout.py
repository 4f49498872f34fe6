"""The layout's import boundaries: the math imports neither Kedro nor Flower, and the Kedro
pipelines and the Flower adapters never import each other (they share the typed setup)."""

from __future__ import annotations

import ast

from ..conftest import PROJECT_ROOT

SRC = PROJECT_ROOT / "src" / "fdrmfl_pipeline"


def _imports(path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def _offenders(folder: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {}
    for path in sorted((SRC / folder).rglob("*.py")):
        hits = sorted(m for m in _imports(path) if m.startswith(forbidden))
        if hits:
            bad[str(path.relative_to(SRC))] = hits
    return bad


def test_core_imports_neither_kedro_nor_flower_nor_the_adapters():
    assert (
        _offenders("core", ("kedro", "flwr", "fdrmfl_pipeline.pipelines", "fdrmfl_pipeline.flower"))
        == {}
    )


def test_pipelines_and_flower_do_not_import_each_other():
    assert _offenders("pipelines", ("fdrmfl_pipeline.flower", "flwr")) == {}
    assert _offenders("flower", ("fdrmfl_pipeline.pipelines",)) == {}


def test_nothing_unpickles_files():
    """Checkpoints, Flower results and model bundles load with weights_only=True (or as JSON);
    no pickle load anywhere in the project's code."""
    roots = [SRC, PROJECT_ROOT / "benchmarks", PROJECT_ROOT / "experiments", PROJECT_ROOT / "tests"]
    needles = ("weights_only=" + "False", "pickle." + "load")  # split: this file is scanned too
    for root in roots:
        for path in root.rglob("*.py"):
            text = path.read_text()
            for needle in needles:
                assert needle not in text, (path, needle)
