"""Entry point: `python launch.py [group=option ...] [key=value ...]` (add -m for sweeps)."""

import sys

from miles_hydra.errors import ConfigError
from miles_hydra.launch import resume
from miles_hydra.launch.help import answer
from miles_hydra.launch.hints import typo_hints

if __name__ == "__main__":
    # Answered before Hydra is imported: --help and +describe read conf/ and the schemas only.
    if (rc := answer(sys.argv[1:])) is not None:
        sys.exit(rc)
    try:  # resume=<run_dir>: the run's own overrides, the new ones and its directory
        sys.argv[1:] = resume.rewrite_argv(sys.argv[1:])
    except ConfigError as exc:
        print(f"miles_hydra: {exc}", file=sys.stderr)
        sys.exit(2)
    if hints := typo_hints(sys.argv[1:]):  # refuse typos with a "did you mean" before Hydra starts
        print("miles_hydra: invalid override(s):\n  " + "\n  ".join(hints), file=sys.stderr)
        sys.exit(2)

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from miles_hydra.config.store import register_configs  # noqa: E402
from miles_hydra.launch.app import main as app_main  # noqa: E402

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    return app_main(cfg)


if __name__ == "__main__":
    main()
