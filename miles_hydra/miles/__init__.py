"""backend=miles: compile a RunConfig into miles' train.py command, check it, run it on Ray.

compile.py (+ model_args.py, sections.py) is the pure compiler; flags.py the fast flag-table
check; oracle.py / oracle_child.py miles' own parser in a subprocess; check.py mode=check;
runner.py `ray job submit` in the job; combos.py the preset combinations of the golden files.
"""
