"""The grid sweeper of miles_hydra (``hydra/sweeper=miles``, the default): Hydra's basic sweeper,
except that every variant of every batch is validated by the miles launcher *before* the sweep
directory exists. A value Hydra itself refuses (``-m algorithm.lr=1e-4,abc``) gets the same
message as ours (variant number, key, rc 2), and a refused sweep leaves no directory behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf


class MilesBasicSweeper(BasicSweeper):
    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        assert self.hydra_context is not None
        params_conf = self._parse_config()
        params_conf.extend(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides(params_conf)
        batches: list[Sequence[Sequence[str]]] = list(
            self.split_arguments(overrides, self.max_batch_size)
        )
        self._validate([job for batch in batches for job in batch])
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns = []
        initial_job_idx = 0
        for batch in batches:
            results = self.launcher.launch(batch, initial_job_idx=initial_job_idx)
            for r in results:
                _ = r.return_value  # raises if the job failed, as Hydra's sweeper does
            initial_job_idx += len(batch)
            returns.append(results)
        return returns

    def _validate(self, jobs: list[Sequence[str]]) -> None:
        from hydra_plugins.miles_hydra_launcher.launcher import MilesHydraLauncher

        if isinstance(self.launcher, MilesHydraLauncher):
            self.launcher.validate(jobs, initial_job_idx=0)  # exits 2 naming each bad variant
        else:
            self.validate_batch_is_legal(jobs)
