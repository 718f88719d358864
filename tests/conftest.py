"""Shared fixtures: compose the repo's real conf/ with Hydra, and materialize it."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

from miles_hydra.config import RunConfig
from miles_hydra.config.store import materialize as _materialize
from miles_hydra.config.store import register_configs

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"

register_configs()


def compose_config(overrides: list[str], output_root: Path | None = None) -> DictConfig:
    """Compose conf/config.yaml with ``overrides`` (GlobalHydra cleared before and after)."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()
    if output_root is not None:
        with open_dict(cfg):
            cfg.output_root = str(output_root)
    return cfg


@functools.lru_cache(maxsize=64)
def _compose_choices(choices: tuple[str, ...]) -> DictConfig:
    return compose_config(list(choices))


def compose_fast(overrides: list[str]) -> DictConfig:
    """Like ``compose_config`` but composes each set of group choices once (cached) and applies
    ``key=value`` overrides with OmegaConf on a copy: typed nodes still reject wrong types and
    unknown keys. Use the real ``compose`` for anything that tests Hydra's own parsing."""
    choices = tuple(o for o in overrides if "=" in o and "." not in o.split("=", 1)[0])
    cfg = copy.deepcopy(_compose_choices(choices))
    for item in overrides:
        if item in choices:
            continue
        key, _, raw = item.partition("=")
        value = yaml.safe_load(raw) if raw else None
        if key.startswith("+"):
            with open_dict(cfg):
                OmegaConf.update(cfg, key[1:], value, force_add=True)
        else:
            OmegaConf.update(cfg, key, value)
    return cfg


def materialize(cfg: DictConfig) -> RunConfig:
    """Validate a composed config into a RunConfig (raises ConfigError)."""
    return _materialize(cfg)


@pytest.fixture
def compose(tmp_path: Path) -> Iterator[Callable[[list[str]], DictConfig]]:
    """``compose(overrides) -> DictConfig`` on the repo's conf/, outputs under tmp_path."""

    def _compose(overrides: list[str]) -> DictConfig:
        return compose_config(overrides, output_root=tmp_path / "runs")

    yield _compose
    GlobalHydra.instance().clear()
