"""Kedro project settings."""

import warnings

from kedro.config import OmegaConfigLoader

from fdrmfl_pipeline.hooks import (
    OutputFolderHooks,
    ParameterCheckHooks,
    ReportPathHooks,
    install_excepthook,
)

# OmegaConf's deprecation notice about Kedro's own resolver registration: not the user's business
warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated")

HOOKS = (ParameterCheckHooks(), OutputFolderHooks(), ReportPathHooks())
install_excepthook()  # the named error is the last line of a failed run

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # environments (conf/<protocol>, conf/local) override single nested parameters instead of
    # replacing a whole parameter group
    "merge_strategy": {"parameters": "soft", "globals": "soft"},
}
