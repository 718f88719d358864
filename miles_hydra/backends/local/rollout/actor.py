"""The rollout engine as a Ray actor (`RolloutEngineActor.options(num_cpus=...).remote(...)`)."""

from __future__ import annotations

from typing import Any

import ray

from miles_hydra.backends.local.rollout.engine import RolloutEngine
from miles_hydra.launch.console import redirect_actor_output


class RolloutEngineProcess(RolloutEngine):
    """A RolloutEngine in its own Ray worker process, its output in ``logs/engine_<i>.log``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        redirect_actor_output("engine", numbered=True)  # quiet console (launch/console.py)
        super().__init__(*args, **kwargs)


RolloutEngineActor = ray.remote(RolloutEngineProcess)
