"""Embedded RL engine (backend=local). Submodules import torch; this package file does not."""
