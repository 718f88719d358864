"""Shared, session-scoped: every miles preset combination composed with Hydra and compiled once."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from support.combos import Combo, all_combos, split_valid

from miles_hydra.backends.miles.compile import MilesCommand, compile_miles
from miles_hydra.config import RunConfig
from miles_hydra.errors import ConfigError


@dataclass
class MilesCombos:
    combos: list[Combo]  # all 63 model x parallelism pairs (with rotated other groups)
    valid: dict[str, RunConfig]  # the ones our validation accepts
    refused: dict[str, ConfigError]  # the ones it refuses, with the reason
    commands: dict[str, MilesCommand]  # compiled command of every valid combo


@pytest.fixture(scope="session")
def miles_combos() -> MilesCombos:
    combos = all_combos()
    valid, refused = split_valid(combos)
    commands = {name: compile_miles(run) for name, run in valid.items()}
    return MilesCombos(combos, valid, refused, commands)
