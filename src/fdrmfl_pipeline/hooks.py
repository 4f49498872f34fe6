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
