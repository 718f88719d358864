"""miles_hydra: Hydra-configured RL post-training in the style of miles."""

__version__ = "0.1.0"
