"""Entry point: `python launch.py [group=option ...] [key=value ...]` (add -m for sweeps)."""

import sys

import hydra
from omegaconf import DictConfig

from miles_hydra.config.store import register_configs
from miles_hydra.launch.app import main as app_main
from miles_hydra.launch.hints import typo_hints

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    return app_main(cfg)


if __name__ == "__main__":
    if hints := typo_hints(sys.argv[1:]):  # refuse typos with a "did you mean" before Hydra starts
        print("miles_hydra: invalid override(s):\n  " + "\n  ".join(hints), file=sys.stderr)
        sys.exit(2)
    main()
