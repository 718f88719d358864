"""Running jobs: in this process, a submitit subprocess or Slurm; Ray over the allocation.

submit        RunConfig -> submitit job: the one executor builder (single runs and sweep arrays)
allocation    what each task of the allocation runs (AllocationTask): Ray head/worker, then the
              job function on node 0
ray_cluster   Ray bring-up with per-job ports, polling readiness, clean stop
placement     which node runs which actor of the local backend on several nodes
rundir        the run directory and what it records (config, redacted env, git state)
preemption    Slurm's warning signal -> flag polled by training -> requeue through submitit;
              SIGINT/SIGTERM -> checkpoint and stop
watch         the launcher's view of a Slurm job from squeue/sacct: dead jobs reported at once
cleanup       Ray temp dirs of this user's dead jobs, removed when the next job starts
secrets       the sbatch export allowlist; tracker secrets in a 0600 file, not the job record
"""
