"""Running jobs: in this process, a submitit subprocess or Slurm; Ray over the allocation.

submit        RunConfig -> job (one code path through submitit), arrays for sweeps
job_body      what each task runs: Ray head/worker, then the job on node 0
ray_cluster   Ray bring-up with per-job ports, polling readiness, clean stop
rundir        the run directory and what it records (config, redacted env, git state)
preemption    Slurm's warning signal -> flag polled by training -> requeue through submitit
"""
