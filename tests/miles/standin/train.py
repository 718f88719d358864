"""A stand-in for miles' train.py: miles' REAL parser and TensorBoard tracker, no GPUs, no model.

Selected with ``backend.miles_entry=tests/miles/standin/train.py``; runs under the miles oracle
venv's Python (scripts/setup_miles_oracle.sh: miles-rl 0.0.2 + tensorboard), e.g. with
``+backend.env.PATH=<venv>/bin:$PATH`` so that the Ray job's ``python3`` is that one.

1. ``miles.utils.arguments.parse_args()`` on the argv it gets, made parseable on a CPU box the
   way the parser oracle does it (oracle_child.py: torchvision stub, Hopper device arch, a
   temporary HF config.json / prompt files for the path flags). A parse error fails the job
   (exit 2, argparse's message on stderr).
2. ``args.num_rollout`` rollouts logged through miles' own ``tracking_utils`` (init_tracking,
   log, finish_tracking: its TensorboardBackend writes to $TENSORBOARD_DIR), in miles' order
   and on miles' step axes: an evaluation before training (``eval/step`` 0), then per rollout
   ``rollout/*`` and ``perf/*`` (``rollout/step``), ``train/*`` for each of the
   ``args.num_steps_per_rollout`` optimizer steps (``train/step``), an evaluation every
   ``args.eval_interval`` rollouts (``eval/step`` = the rollout's id).
3. Exits with ``$MILES_STANDIN_EXIT_CODE`` (default 0).

The metrics are deterministic functions of the parsed learning rate and TIS threshold, so that a
sweep's ranking can be checked: with ``q = 1 / (1 + (log10(lr) + 5)^2 + (tis_clip - 2)^2)``
(``tis_clip`` 2 without TIS), rollout ``r`` of ``n`` has ``rollout/raw_reward = q * (r + 1) / n``
and an evaluation after ``d`` rollouts ``eval/eval = q * d / n``. The best setting is lr=1e-5,
tis_clip=2; a larger distance from it scores lower.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from pathlib import Path

# How our parser oracle runs miles' parser on a CPU box (stdlib + miles only).
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "miles_hydra/backends/miles/check"))
import oracle_child  # noqa: E402


def parse(argv: list[str]):  # noqa: ANN201 - miles' argparse.Namespace
    oracle_child.bootstrap()
    from miles.utils.arguments import parse_args

    oracle_child._patch_device_arch()
    with tempfile.TemporaryDirectory(prefix="miles_standin_") as root:
        real_argv, _ = oracle_child.materialize(argv, root)
        sys.argv = ["train.py", *real_argv]
        return parse_args()


def quality(lr: float, tis_clip: float | None) -> float:
    upper = 2.0 if tis_clip is None else tis_clip
    return 1.0 / (1.0 + (math.log10(lr) + 5.0) ** 2 + (upper - 2.0) ** 2)


def main() -> int:
    args = parse(sys.argv[1:])
    print(f"stand-in: miles parsed {len(sys.argv) - 1} args; lr={args.lr}", flush=True)
    from miles.utils import tracking_utils

    tracking_utils.init_tracking(args)
    q = quality(args.lr, args.tis_clip if args.use_tis else None)
    n, steps = args.num_rollout, args.num_steps_per_rollout

    def evaluate(rollout_id: int, done: int) -> None:
        metrics = {"eval/eval": q * done / n, "eval/eval-truncated_ratio": 0.0}
        tracking_utils.log(args, {**metrics, "eval/step": rollout_id}, step_key="eval/step")

    if args.eval_interval is not None and not args.skip_eval_before_train:
        evaluate(0, 0)
    for rollout_id in range(n):
        rollout = {
            "rollout/raw_reward": q * (rollout_id + 1) / n,
            "rollout/response_len/mean": 4.0 + rollout_id,
            "rollout/truncated_ratio": 0.0,
            "perf/rollout_time": 0.01,
            "rollout/step": rollout_id,
        }
        tracking_utils.log(args, rollout, step_key="rollout/step")
        for i in range(steps):
            train = {
                "train/loss": 1.0 - q + 0.1 * i,
                "train/grad_norm": 0.5,
                "train/step": rollout_id * steps + i,
            }
            tracking_utils.log(args, train, step_key="train/step")
        if args.eval_interval is not None and (rollout_id + 1) % args.eval_interval == 0:
            evaluate(rollout_id, rollout_id + 1)
        print(f"stand-in: rollout {rollout_id} logged", flush=True)
    tracking_utils.finish_tracking()
    code = int(os.environ.get("MILES_STANDIN_EXIT_CODE", "0"))
    print(f"stand-in: exiting with {code}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
