"""Registration of the schemas in Hydra's ConfigStore, and materialization into a RunConfig."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from miles_hydra.config.algorithm import AlgorithmConfig, CorrectionConfig
from miles_hydra.config.backend import BackendConfig
from miles_hydra.config.checkpoint import CheckpointConfig
from miles_hydra.config.cluster import ClusterConfig
from miles_hydra.config.data import DataConfig
from miles_hydra.config.logging import LoggingConfig
from miles_hydra.config.model import ModelConfig
from miles_hydra.config.parallelism import ParallelismConfig
from miles_hydra.config.precision import PrecisionConfig
from miles_hydra.config.reward import RewardConfig
from miles_hydra.config.rollout import RolloutConfig
from miles_hydra.config.run import RunConfig
from miles_hydra.config.speculative import SpeculativeConfig
from miles_hydra.errors import ConfigError, MilesHydraError

GROUPS: dict[str, type] = {
    "model": ModelConfig,
    "parallelism": ParallelismConfig,
    "precision": PrecisionConfig,
    "speculative": SpeculativeConfig,
    "algorithm": AlgorithmConfig,
    "rollout": RolloutConfig,
    "data": DataConfig,
    "reward": RewardConfig,
    "checkpoint": CheckpointConfig,
    "cluster": ClusterConfig,
    "logging": LoggingConfig,
    "backend": BackendConfig,
}


def register_configs() -> None:
    """Store each group schema as ``/schema/<group>`` and the run schema as ``run_schema``.

    A preset ``conf/<group>/<option>.yaml`` starts with ``defaults: [/schema/<group>@_here_]``
    so that a typo'd key or a wrong type fails at compose time.
    """
    cs = ConfigStore.instance()
    for group, schema in GROUPS.items():
        cs.store(group="schema", name=group, node=schema)
    cs.store(group="schema", name="correction", node=CorrectionConfig)
    cs.store(name="run_schema", node=RunConfig)
    for path in sorted(SWEEPS_DIR.glob("*.yaml")):
        cs.store(group="sweep", name=path.stem, node=OmegaConf.load(path), package="_global_")


SWEEPS_DIR = Path(__file__).resolve().parents[2] / "sweeps"  # sweep presets: +sweep=<name>


def materialize(cfg: DictConfig | dict[str, Any]) -> RunConfig:
    """Turn a composed config into a validated RunConfig, or raise ConfigError.

    Group rules run in each dataclass's ``__post_init__``, then the cross-group rules.
    """
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    if "hydra" in cfg:
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    try:
        node = OmegaConf.merge(OmegaConf.structured(RunConfig), cfg)
        run = OmegaConf.to_object(node)
    except (MilesHydraError, OmegaConfBaseException) as exc:
        original = _original_error(exc)
        if original is not None:
            raise original from None
        key = getattr(exc, "full_key", None) or "config"
        raise ConfigError(key, getattr(exc, "value", None), _short(exc)) from None
    assert isinstance(run, RunConfig)
    return run


def _original_error(exc: BaseException) -> MilesHydraError | None:
    """The first error we raised ourselves, under OmegaConf's re-wrapping."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ConfigError) and exc.why:
            return exc
        if isinstance(exc, MilesHydraError) and not isinstance(exc, ConfigError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _short(exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"is invalid: {first}"
