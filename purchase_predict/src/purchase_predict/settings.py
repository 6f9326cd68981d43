"""Kedro project settings."""

from purchase_contract.config import load_config
from purchase_predict.config_loader import ProjectConfigLoader

# No project hooks: the training pipeline's logging node opens and closes its own MLflow run.


def project_setting(key: str) -> object:
    """``${project:<key>}``: one top-level value of ``[tool.purchase-predict]`` (the contract's
    reader finds the pyproject: ``$PURCHASE_PREDICT_CONFIG``, else the nearest with the table)."""
    return load_config().setting(key)


# Kedro's OmegaConfigLoader, with its resolvers registered through OmegaConf's current API
# (Kedro's own calls print a deprecation warning on every run).
CONFIG_LOADER_CLASS = ProjectConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # ${project:model_name} reads the repository-wide names from the root pyproject.
    "custom_resolvers": {"project": project_setting},
}
