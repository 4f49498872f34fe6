"""Project hooks: the whole parameter tree is checked once, before any node runs."""

from __future__ import annotations

from kedro.framework.hooks import hook_impl


class ParameterCheckHooks:
    """Unknown parameter keys (``trainng.rounds``, ``seeed``) fail the run with the closest
    known name, instead of being ignored while the defaults are used."""

    @hook_impl
    def after_context_created(self, context) -> None:
        from fdrmfl_pipeline.params import check_parameters

        # the raw tree (runtime parameters merged), before Kedro's per-node validation, so a
        # misspelt key inside a group gets the same named error with its closest name
        check_parameters(dict(context.config_loader["parameters"]))


class ReportPathHooks:
    """Say where the run's report landed (it is versioned: one folder per run)."""

    @hook_impl
    def after_pipeline_run(self, run_params: dict, pipeline, catalog) -> None:
        import logging
        from pathlib import Path

        if "run_report" not in pipeline.all_outputs():
            return
        root = Path(run_params.get("project_path") or ".")
        reports = sorted((root / "data/08_reporting/report.html").glob("*/report.html"))
        if reports:
            logging.getLogger(__name__).info("Report: %s", reports[-1])
