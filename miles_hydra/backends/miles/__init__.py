"""backend=miles: compile a RunConfig into miles' train.py command, check it, run it on Ray.

compile.py (+ model_args.py, sections.py) is the pure compiler and rules.py the miles-only
validation (run at materialize time); flags.py the fast flag-table check; oracle.py /
oracle_child.py miles' own parser in a subprocess; check.py mode=check; runner.py
`ray job submit` in the job, after dataset.py wrote a synthetic task's prompt files; rewards.py
our task and custom rewards inside miles; combos.py the preset combinations of the golden files.
"""
