"""Kedro project settings."""

from kedro.config import OmegaConfigLoader

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # environments (conf/paper_*, conf/local) override single nested parameters instead of
    # replacing a whole parameter group
    "merge_strategy": {"parameters": "soft", "globals": "soft"},
}
