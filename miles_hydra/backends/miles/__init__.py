"""backend=miles: compile a RunConfig into miles' train.py command, check it, run it on Ray.

compile.py (+ model_args.py, sections.py) is the pure compiler; the miles-only validation lives
with the other rules in ``miles_hydra.config.miles_rules`` (run at materialize time). check/ holds
what verifies a compiled command without running it: the flag table (flags.py), miles' own
parser in a subprocess (oracle.py, oracle_child.py) and mode=check (compare.py). runner.py does
`ray job submit` in the job, after dataset.py wrote a synthetic task's prompt files; rewards.py
is our task and custom rewards inside miles. Task and reward code is shared with the local
backend through ``miles_hydra.tasks``; nothing here imports ``miles_hydra.backends.local``.
"""
