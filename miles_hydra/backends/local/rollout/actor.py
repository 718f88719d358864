"""The rollout engine as a Ray actor (`RolloutEngineActor.options(num_cpus=...).remote(...)`)."""

from __future__ import annotations

import ray

from miles_hydra.backends.local.rollout.engine import RolloutEngine

RolloutEngineActor = ray.remote(RolloutEngine)
