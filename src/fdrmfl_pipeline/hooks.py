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


class OutputFolderHooks:
    """A read-only output folder fails the run before any node runs (it used to fail after the
    model was saved, leaving a model version with no history or features)."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict, pipeline, catalog) -> None:
        import os
        from pathlib import Path

        from fdrmfl_pipeline.errors import ConfigError

        blocked = set()
        for name in sorted(pipeline.all_outputs()):
            try:
                ds = catalog.get(name)
            except Exception:  # memory datasets, factories that resolve later: nothing to check
                continue
            raw = getattr(ds, "_filepath", None) or getattr(ds, "_path", None)
            if raw is None or "://" in str(raw):
                continue
            folder = Path(str(raw))
            while not folder.exists() and folder != folder.parent:
                folder = folder.parent
            if folder.is_file():
                folder = folder.parent
            if not os.access(folder, os.W_OK):
                blocked.add(str(folder))
        if blocked:
            raise ConfigError(
                f"cannot write to {', '.join(sorted(blocked))}: the run's outputs go there. Make "
                "the folder writable (or point the catalog elsewhere in conf/local/catalog.yml); "
                "nothing was run"
            )


def named_error(exc: BaseException | None):
    """The project's own error behind ``exc`` (Kedro wraps dataset errors), if any."""
    from fdrmfl_pipeline.errors import FdrmflError

    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, FdrmflError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def install_excepthook() -> None:
    """After the usual traceback, repeat the project's named error as the last line, so the
    one sentence that says what is wrong and how to fix it is what the user sees last."""
    import sys

    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        previous(exc_type, exc, tb)
        named = named_error(exc)
        if named is not None:
            sys.stderr.write(f"\nError ({type(named).__name__}): {named}\n")

    sys.excepthook = hook
