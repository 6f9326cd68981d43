"""The logic behind the workflows' command-line steps: branch to environment, trigger plan, layout check, quality gate."""

__version__ = "0.1.0"
