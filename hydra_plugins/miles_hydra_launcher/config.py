"""Configs of the miles_hydra launcher and sweepers (grid, asynchronous Optuna); resources
come from each variant's ``cluster`` group."""

from dataclasses import dataclass
from typing import Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeperConf
from hydra.core.config_store import ConfigStore

from hydra_plugins.miles_hydra_launcher import resolvers  # noqa: F401  (${launch_id:})


@dataclass
class MilesLauncherConf:
    _target_: str = "hydra_plugins.miles_hydra_launcher.launcher.MilesHydraLauncher"
    submitit_folder: str = "${hydra.sweep.dir}/.submitit/%j"  # submitit's logs and pickles


@dataclass
class MilesSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.miles_hydra_launcher.sweeper.MilesBasicSweeper"
    max_batch_size: Optional[int] = None  # variants per launcher call; None = all at once


PRUNERS = ("median", "successive_halving", "threshold", "none")


@dataclass
class MilesOptunaSweeperConf:
    _target_: str = "hydra_plugins.miles_hydra_launcher.optuna_sweeper.MilesOptunaSweeper"
    direction: str = "maximize"  # maximize | minimize the trials' objective
    study_name: Optional[str] = None  # None: the experiment_name
    n_trials: int = 8  # trials to run to their end (complete, pruned or failed)
    max_concurrent: int = 4  # trials running at once; a new one starts as soon as one ends
    seed: Optional[int] = None  # seed of the TPE sampler
    n_startup_trials: int = 4  # TPE samples at random for this many trials first
    pruner: str = "median"  # median | successive_halving | threshold | none
    pruner_startup_trials: int = 2  # median: prune only once this many trials completed
    pruner_warmup_steps: int = 1  # no pruning before this rollout (SHA: its min_resource)
    prune_below: Optional[float] = None  # threshold: prune a trial whose metric falls below
    prune_above: Optional[float] = None  # threshold: prune a trial whose metric rises above
    poll_s: float = 2.0  # seconds between looks at the running trials' metrics and jobs
    params: Optional[dict[str, str]] = None  # key -> search space (see above)


ConfigStore.instance().store(
    group="hydra/launcher", name="miles", node=MilesLauncherConf, provider="miles_hydra"
)
for _name in ("miles", "basic"):  # also Hydra's default grid sweeper (scanned after Hydra's own)
    ConfigStore.instance().store(
        group="hydra/sweeper", name=_name, node=MilesSweeperConf, provider="miles_hydra"
    )
ConfigStore.instance().store(
    group="hydra/sweeper", name="miles_optuna", node=MilesOptunaSweeperConf, provider="miles_hydra"
)
