"""Kedro project settings."""

from kedro.config import OmegaConfigLoader

from purchase_predict.project_config import project_setting

# No project hooks: the training pipeline's logging node opens and closes its own MLflow run.

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # ${project:model_name} reads the repository-wide names from the root pyproject.
    "custom_resolvers": {"project": project_setting},
}
