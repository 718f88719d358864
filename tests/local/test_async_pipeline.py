"""The one-step-off pipeline (rollout.async_training) through real Ray: rollout n+1 is generated
with the weights of step n-1 in the background while the trainer trains on rollout n; the run is
deterministic under a seed, survives a requeue bit for bit, and the mismatch metrics show the
off-policy gap that TIS corrects."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from support import ray_local
from support.tiny import TINY_BARE_RUN

from miles_hydra.backends.local import loop
from miles_hydra.backends.local.collector import RolloutCollector
from miles_hydra.backends.local.metrics import read_records
from miles_hydra.config.store import materialize

pytestmark = pytest.mark.slow

ASYNC = [
    *TINY_BARE_RUN,
    "rollout.num_rollout=4",
    "rollout.async_training=true",
    "algorithm=grpo_tis",
    "algorithm.lr=3e-3",
    "checkpoint.save_interval=null",
]
KEYS = ("rollout/raw_reward", "rollout/response_len/mean", "train/pg_loss", "train/grad_norm")


ray_instance = pytest.fixture(scope="module", autouse=True)(ray_local.ray_instance)


def steps(run_dir: Path) -> list[dict]:
    return [r for r in read_records(run_dir / "metrics.jsonl") if "step" in r]


def test_one_step_off_versions_determinism_and_requeue(
    compose, tmp_path: Path, monkeypatch
) -> None:
    cfg = materialize(compose(ASYNC))
    seen: list[tuple[int, str]] = []
    original = RolloutCollector.collect

    def recording(self, version: int):
        seen.append((version, threading.current_thread().name))
        return original(self, version)

    monkeypatch.setattr(RolloutCollector, "collect", recording)
    monkeypatch.setattr(loop.preemption, "requested", lambda: False)
    loop.train(cfg, tmp_path / "a")
    # rollout 0 with the initial weights in the driver; rollout n+1 with those of step n-1, in
    # the background thread while rollout n trains
    assert [v for v, _ in seen] == [0, 0, 1, 2]
    assert seen[0][1] == "MainThread" and all(t.startswith("rollout") for _, t in seen[1:])
    a = steps(tmp_path / "a")
    assert [r["step"] for r in a] == [0, 1, 2, 3]
    assert all("perf/rollout_wait_time" in r for r in a)
    # rollout 0 is on-policy; from rollout 1 on the trainer's weights are one step ahead of the
    # rollout's, and the mismatch metric shows it
    diff = [r["train/train_rollout_logprob_abs_diff"] for r in a]
    assert diff[0] < 1e-5, diff
    assert min(diff[1:]) > 5 * max(diff[0], 1e-6), diff

    # the same seed, preempted after rollout 1 (its checkpoint holds the prefetched rollout 2)
    # and requeued: every rollout and step equals the uninterrupted run's
    calls = iter(range(100))
    monkeypatch.setattr(loop.preemption, "requested", lambda: next(calls) == 1)
    first = loop.train(cfg, tmp_path / "b")
    assert first["preempted"] is True
    monkeypatch.setattr(loop.preemption, "requested", lambda: False)
    loop.train(cfg, tmp_path / "b")
    b = steps(tmp_path / "b")
    assert [r["step"] for r in b] == [0, 1, 2, 3]
    for x, y in zip(a, b):
        assert {k: x[k] for k in KEYS} == pytest.approx({k: y[k] for k in KEYS}, rel=1e-5)
