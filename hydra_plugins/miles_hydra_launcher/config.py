"""Config of the miles_hydra launcher; resources come from each variant's ``cluster`` group."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class MilesLauncherConf:
    _target_: str = "hydra_plugins.miles_hydra_launcher.launcher.MilesHydraLauncher"
    submitit_folder: str = "${hydra.sweep.dir}/.submitit/%j"  # submitit's logs and pickles


ConfigStore.instance().store(
    group="hydra/launcher", name="miles", node=MilesLauncherConf, provider="miles_hydra"
)
