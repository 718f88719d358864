"""What ``launch.py`` does: validate, then plan, check or run.

app.py    the Hydra task function: materialize the config, dispatch on ``mode``
plan.py   mode=plan / mode=check: the resolved layout, memory estimate, compiled command
memory.py the per-GPU memory estimate shown in the plan
hints.py  "did you mean" hints for mistyped group options and keys
run.py    one run: submit it (here, submitit or Slurm), and what it does inside the job
"""
