"""Training pipeline: split, search, fit, evaluate, plot, then log and register in MLflow."""

from kedro.pipeline import Node, Pipeline

from purchase_predict.pipelines.training.nodes import (
    data_fingerprint,
    evaluate_model,
    log_training_run,
    plot_model_reports,
    run_params,
    search_hyperparameters,
    split_train_test,
    train_model,
)


def _model_nodes() -> list[Node]:
    """Fingerprint, split, search and final fit."""
    return [
        Node(
            data_fingerprint,
            inputs="primary@pandas",
            outputs="data_fingerprint",
            name="fingerprint_primary",
        ),
        Node(
            split_train_test,
            inputs=["primary@pandas", "params:test_ratio", "params:seed"],
            outputs=["train_set", "test_set"],
            name="split_train_test",
        ),
        Node(
            search_hyperparameters,
            inputs={
                "train_set": "train_set",
                "search_space": "params:search_space",
                "model_fixed_params": "params:model_fixed_params",
                "automl_max_evals": "params:automl_max_evals",
                "cv_folds": "params:cv_folds",
                "seed": "params:seed",
            },
            outputs=["best_hyperparameters", "decision_threshold"],
            name="search_hyperparameters",
        ),
        Node(
            train_model,
            inputs=[
                "train_set",
                "best_hyperparameters",
                "params:model_fixed_params",
                "params:seed",
            ],
            outputs="purchase_model",
            name="train_model",
        ),
    ]


def _report_nodes() -> list[Node]:
    """Evaluation, plots, the logged params, then the MLflow run and the model's registration."""
    return [
        Node(
            evaluate_model,
            inputs=["purchase_model", "test_set", "decision_threshold"],
            outputs="training_metrics",
            name="evaluate_model",
        ),
        Node(
            plot_model_reports,
            inputs=["purchase_model", "test_set", "decision_threshold"],
            outputs="training_plots",
            name="plot_model_reports",
        ),
        Node(
            run_params,
            inputs=[
                "best_hyperparameters",
                "decision_threshold",
                "params:automl_max_evals",
                "params:test_ratio",
                "params:seed",
            ],
            outputs="run_params",
            name="collect_run_params",
        ),
        Node(
            log_training_run,
            inputs={
                "model": "purchase_model",
                "train_set": "train_set",
                "test_set": "test_set",
                "params": "run_params",
                "metrics": "training_metrics",
                "plots": "training_plots",
                "data_fingerprint": "data_fingerprint",
                "mlflow_settings": "params:mlflow_logging",
            },
            outputs="training_run",
            name="log_training_run",
        ),
    ]


def create_pipeline(**kwargs: object) -> Pipeline:
    """Nodes of the training pipeline; the logging node runs last and registers the model."""
    return Pipeline([*_model_nodes(), *_report_nodes()])
