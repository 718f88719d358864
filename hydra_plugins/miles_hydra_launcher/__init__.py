"""Hydra launcher plugin of miles_hydra (``hydra/launcher=miles``, the default)."""
