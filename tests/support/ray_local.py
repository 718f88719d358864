"""One in-process Ray instance for a test module that runs the local engine's actors."""

from __future__ import annotations

import os
from collections.abc import Iterator


def ray_instance() -> Iterator[None]:
    """Ray with 2 CPUs, no dashboard, actor output kept out of the test log; use it as
    ``ray_instance = pytest.fixture(scope="module", autouse=True)(ray_local.ray_instance)``."""
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ.setdefault("RAY_worker_niceness", "0")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
