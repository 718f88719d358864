"""Errors meant for users: each names the config key, the bad value, why, and the fix."""

from __future__ import annotations


class MilesHydraError(Exception):
    """Base class of every error miles_hydra raises on purpose."""


class ConfigError(MilesHydraError):
    """A config value is invalid. Raised before anything is submitted or started.

    Message shape: ``<key>=<value> <why>; <fix>``.
    """

    def __init__(self, key: str, value: object = None, why: str = "", fix: str = "") -> None:
        self.key = key
        self.value = value
        self.why = why
        self.fix = fix
        if not why:  # re-raised by OmegaConf with a ready-made message
            super().__init__(key)
            return
        message = f"{key}={value!r} {why}"
        if fix:
            message += f"; {fix}"
        super().__init__(message)


class DataError(MilesHydraError):
    """A data file is malformed. The message names the file and the line."""


class RewardError(MilesHydraError):
    """A reward function raised or returned something that is not a finite number."""


class TrainingError(MilesHydraError):
    """Training cannot continue (e.g. NaN/Inf loss). The last good checkpoint is kept."""


class ClusterError(MilesHydraError):
    """The cluster (Slurm, Ray) failed to start or lost a node."""
