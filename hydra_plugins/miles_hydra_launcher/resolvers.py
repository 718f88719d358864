"""``${launch_id:}``: this launch's own name for its run or sweep directory.

``<time to the second>_<pid>``: three launches in the same second never share a directory (the
pid tells them apart), and every variant of a sweep (a Slurm array task too) sees the launcher's
value: the resolver is cached in the config like Hydra's ``now`` and the cache travels with it.
"""

from __future__ import annotations

import os
import time

from omegaconf import OmegaConf


def launch_id() -> str:
    return f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{os.getpid()}"


def register() -> None:
    OmegaConf.register_new_resolver("launch_id", launch_id, use_cache=True, replace=True)


register()
