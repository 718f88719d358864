"""The two backends, side by side: ``local`` (the embedded RL engine: Ray actors, Torch, small
models on one machine) and ``miles`` (the compiler to miles' ``train.py`` and its runner).

Both read the same typed ``RunConfig`` (``miles_hydra.config``) and share task and reward code
(``miles_hydra.tasks``); neither imports the other (tests/architecture checks the import graph).
"""
