"""Typed config schemas (one dataclass per group) and their registration with Hydra."""

from miles_hydra.config.run import Mode, RunConfig
from miles_hydra.config.store import GROUPS, materialize, register_configs

__all__ = ["GROUPS", "Mode", "RunConfig", "materialize", "register_configs"]
