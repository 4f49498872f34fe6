"""Kedro commands and kedro-viz import every pipeline module: heavy libraries must stay lazy."""

import subprocess
import sys


def test_registering_pipelines_imports_no_heavy_library():
    code = (
        "import sys\n"
        "from kedro.framework.project import configure_project\n"
        "configure_project('fdrmfl_pipeline')\n"
        "from fdrmfl_pipeline.pipeline_registry import register_pipelines\n"
        "pipes = register_pipelines()\n"
        "assert {'ingestion', 'partitioning', 'training'} <= set(pipes), sorted(pipes)\n"
        "heavy = [m for m in ('torch', 'optuna', 'flwr', 'sklearn', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
