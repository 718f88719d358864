"""The top-level run config: one field per group, validated as a whole when materialized."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Optional

from miles_hydra.config.algorithm import AlgorithmConfig
from miles_hydra.config.backend import BackendConfig
from miles_hydra.config.checkpoint import CheckpointConfig
from miles_hydra.config.cluster import ClusterConfig
from miles_hydra.config.data import DataConfig
from miles_hydra.config.logging import LoggingConfig
from miles_hydra.config.model import ModelConfig
from miles_hydra.config.parallelism import ParallelismConfig
from miles_hydra.config.precision import PrecisionConfig
from miles_hydra.config.reward import RewardConfig
from miles_hydra.config.rollout import RolloutConfig
from miles_hydra.config.speculative import SpeculativeConfig
from miles_hydra.config.validate import validate_run


class Mode(enum.Enum):
    run = "run"  # validate, then run or submit the job
    plan = "plan"  # validate and print the resolved config and the plan; run nothing
    check = "check"  # backend=miles: also parse the compiled command with miles' own parser


@dataclass
class RunConfig:
    experiment_name: str = "default"  # run-directory and tracker grouping name
    mode: Mode = Mode.run  # what launch.py does with the config
    seed: int = 1234  # global seed (data, sampling, init)
    output_root: str = "runs"  # root of all run directories
    objective_metric: Optional[str] = None  # value returned to sweepers; None = first eval/* metric
    model: ModelConfig = field(default_factory=ModelConfig)  # architecture and weights
    parallelism: ParallelismConfig = field(default_factory=ParallelismConfig)  # GPU layout
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)  # numeric formats
    speculative: SpeculativeConfig = field(default_factory=SpeculativeConfig)  # draft decoding
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)  # RL objective
    rollout: RolloutConfig = field(default_factory=RolloutConfig)  # sampling and batch sizes
    data: DataConfig = field(default_factory=DataConfig)  # prompts
    reward: RewardConfig = field(default_factory=RewardConfig)  # scoring
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)  # load/save
    cluster: ClusterConfig = field(default_factory=ClusterConfig)  # where it runs
    logging: LoggingConfig = field(default_factory=LoggingConfig)  # tracking
    backend: BackendConfig = field(default_factory=BackendConfig)  # which engine

    def __post_init__(self) -> None:
        validate_run(self)
