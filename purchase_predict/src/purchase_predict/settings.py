"""Kedro project settings."""

from kedro.config import OmegaConfigLoader
from omegaconf import OmegaConf

from purchase_contract.config import load_config

# No project hooks: the training pipeline's logging node opens and closes its own MLflow run.


def project_setting(key: str) -> object:
    """``${project:<key>}``: one top-level value of ``[tool.purchase-predict]`` (the contract's
    reader finds the pyproject: ``$PURCHASE_PREDICT_CONFIG``, else the nearest with the table)."""
    return load_config().setting(key)


# ${project:model_name} reads the repository-wide names from the root pyproject. Registered
# here with OmegaConf's current API: Kedro's CONFIG_LOADER_ARGS["custom_resolvers"] calls the
# deprecated register_new_resolver (a UserWarning on every run); Kedro skips names already known.
if not OmegaConf.has_resolver("project"):
    OmegaConf.register_resolver("project", project_setting)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}
