"""Typed config schemas (one dataclass per group), validation, and their registration with Hydra.

This package file imports only the schemas (plain dataclasses, no Hydra): the reward and task
code that runs inside miles imports from here. Hydra's side (``register_configs``,
``materialize``, ``GROUPS``) lives in ``miles_hydra.config.store``.
"""

from miles_hydra.config.run import Mode, RunConfig

__all__ = ["Mode", "RunConfig"]
