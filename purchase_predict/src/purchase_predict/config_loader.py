"""Kedro's ``OmegaConfigLoader``, registering its resolvers with OmegaConf's current API.

Kedro 1.7 registers ``globals``, ``runtime_params`` and the project's custom resolvers with
``OmegaConf.register_new_resolver``, deprecated since OmegaConf 2.4: every ``kedro run``
printed its ``UserWarning`` twice (once per call site). The same registrations, through
``OmegaConf.register_resolver``, which takes the same arguments.
"""

from __future__ import annotations

from collections.abc import Callable

from kedro.config import OmegaConfigLoader
from omegaconf import OmegaConf


class ProjectConfigLoader(OmegaConfigLoader):
    """``OmegaConfigLoader`` without OmegaConf's deprecation warnings; behaviour unchanged."""

    @staticmethod
    def _register_new_resolvers(resolvers: dict[str, Callable]) -> None:
        # As Kedro: a name already known (e.g. registered by a previous loader) is kept.
        for name, resolver in resolvers.items():
            if not OmegaConf.has_resolver(name):
                OmegaConf.register_resolver(name, resolver)

    def _register_globals_resolver(self) -> None:
        OmegaConf.register_resolver("globals", self._get_globals_value, replace=True)

    def _register_runtime_params_resolver(self) -> None:
        OmegaConf.register_resolver("runtime_params", self._get_runtime_value, replace=True)
