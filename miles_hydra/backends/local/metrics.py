"""Metrics of the local engine under miles' names, and where they go.

Per rollout the driver logs one record ``{"step": rollout_id, "rollout/...", "train/...",
"perf/..."}``; evaluations are separate records ``{"eval/step": n_rollouts_done,
"eval/<task>": accuracy}``. Records go to ``<run_dir>/metrics.jsonl`` (one JSON object a
line), to a tqdm progress bar with the key numbers, and to the trackers of ``logging.trackers``
(W&B, TensorBoard, MLflow: trackers.py; axes as in miles: ``rollout/step``, ``train/step``,
``eval/step``). ``write_plots`` turns the JSONL into PNGs at the end of the run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from miles_hydra.backends.local.spec_monitor import DEPTH_RATE_PREFIX
from miles_hydra.backends.local.trackers import WandbTracker, open_trackers
from miles_hydra.config import RunConfig
from miles_hydra.launch.console import log_above_bar

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
PLOTS_DIR = "plots"

# Key numbers on the progress bar: metric name -> short label.
_BAR_KEYS = {
    "rollout/raw_reward": "reward",
    "train/loss": "loss",
    "train/train_rollout_logprob_abs_diff": "mismatch",
    "rollout/spec_accept_length": "accept_len",
}


def rollout_metrics(
    rewards: list[float],
    response_lengths: list[int],
    finished: list[bool],
    group_size: int,
) -> dict[str, float]:
    """miles' RolloutManager metrics: raw reward, response lengths, truncation, zero-std groups.

    ``rollout/zero_std/count_<r>`` counts prompt groups whose samples all got reward r (they
    carry no GRPO signal).
    """
    lengths = np.asarray(response_lengths, dtype=np.float64)
    out = {
        "rollout/raw_reward": float(np.mean(rewards)),
        "rollout/response_len/mean": float(lengths.mean()),
        "rollout/response_len/median": float(np.median(lengths)),
        "rollout/response_len/max": float(lengths.max()),
        "rollout/response_len/min": float(lengths.min()),
        "rollout/truncated_ratio": float(1.0 - np.mean(finished)),
    }
    groups = np.asarray(rewards, dtype=np.float64).reshape(-1, group_size)
    flat = groups[np.ptp(groups, axis=1) == 0]
    for value in np.unique(flat[:, 0]) if len(flat) else []:
        out[f"rollout/zero_std/count_{value:g}"] = float((flat[:, 0] == value).sum())
    out["rollout/zero_std/all_zero_percentage"] = float(np.mean(np.all(groups == 0, axis=1)))
    out["rollout/zero_std/all_one_percentage"] = float(np.mean(np.all(groups == 1, axis=1)))
    return out


def truncate_records(path: Path, start_step: int) -> None:
    """Drop records a killed run wrote after its last checkpoint (``step >= start_step`` and
    ``eval/step > start_step``) so that a resumed run repeats and loses nothing."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if record.get("step", -1) >= start_step or record.get("eval/step", -1) > start_step:
            continue
        kept.append(line)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


def read_records(path: Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl."""
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class MetricsLogger:
    """Writes records to metrics.jsonl, the progress bar and the configured trackers."""

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: Path,
        start_step: int,
        wandb_id: str | None = None,
        resumed: bool = False,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE
        truncate_records(self.path, start_step)
        if not resumed and self.path.exists():  # a fresh run in a used directory starts over
            self.path.unlink()
        self.steps_per_rollout = cfg.rollout.num_steps_per_rollout
        self.bar = None
        self.console = contextlib.ExitStack()
        if cfg.logging.progress_bar:
            from tqdm import tqdm

            self.bar = tqdm(
                total=cfg.rollout.num_rollout, initial=start_step, desc="rollouts", unit="rollout"
            )
            self.console.enter_context(log_above_bar())  # log lines (checkpoints) above it
        self.postfix: dict[str, str] = {}
        self.trackers = open_trackers(cfg, self.run_dir, start_step, wandb_id)

    @property
    def wandb_id(self) -> str | None:
        """The W&B run to continue on resume (None without W&B)."""
        return next((t.id for t in self.trackers if isinstance(t, WandbTracker)), None)

    def log_rollout(self, step: int, metrics: dict[str, float]) -> None:
        """One record per finished rollout; advances the progress bar."""
        record = {"step": step, **_clean(metrics)}
        self._write(record)
        for key, label in _BAR_KEYS.items():
            if key in record:
                self.postfix[label] = f"{record[key]:.3g}"
        if self.bar is not None:
            self.bar.set_postfix(self.postfix, refresh=False)
            self.bar.update(1)
        train_step = (step + 1) * self.steps_per_rollout - 1  # the rollout's last optimizer step
        for tracker in self.trackers:
            tracker.log_rollout(record, step, train_step)

    def log_eval(self, eval_step: int, metrics: dict[str, float]) -> None:
        """One record per evaluation, ``eval_step`` = rollouts finished before it."""
        record = {"eval/step": eval_step, **_clean(metrics)}
        self._write(record)
        for key, value in metrics.items():
            if _is_accuracy(key):
                self.postfix["eval"] = f"{value:.3g}"
        if self.bar is not None:
            self.bar.set_postfix(self.postfix)
        for tracker in self.trackers:
            tracker.log_eval(record, eval_step)

    def show(self, status: dict[str, str]) -> None:
        """Transient status on the progress bar (e.g. warm-start progress); not logged."""
        if self.bar is not None:
            self.bar.set_postfix({**self.postfix, **status})

    def log_event(self, record: dict[str, Any]) -> None:
        """A record outside the rollout loop (e.g. the supervised warm-start summary)."""
        self._write(_clean(record))

    def _write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def close(self, write_plots_too: bool = True) -> None:
        if self.bar is not None:
            self.bar.close()
        self.console.close()
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []
        if write_plots_too:
            write_plots(self.path, self.run_dir / PLOTS_DIR)


def _clean(metrics: dict[str, Any]) -> dict[str, Any]:
    """Plain floats (JSON has no NaN: non-finite values become strings)."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        out[key] = value
    return out


# plot name -> (metrics, y-axis label with units)
_PLOTS: dict[str, tuple[list[str], str]] = {
    "reward": (["rollout/raw_reward"], "mean reward per sample"),
    "mismatch": (
        ["train/train_rollout_logprob_abs_diff", "train/train_rollout_kl"],
        "train vs rollout, nats per token",
    ),
    "timings": (
        ["perf/rollout_time", "perf/train_time", "perf/update_weights_time"],
        "seconds per rollout",
    ),
    "speculative": (["rollout/spec_accept_length"], "tokens per verify step"),
    "routing": (["train/routing_mismatch"], "fraction of tokens"),
}
EVAL_YLABEL = "held-out accuracy (fraction correct)"
DEPTH_YLABEL = "acceptance rate (fraction)"
BEFORE_WARM_START = "before\nwarm-start"  # the x = -1 evaluation (eval/step -1)


def write_plots(metrics_path: Path, out_dir: Path) -> list[Path]:
    """PNG plots (reward, eval accuracy, mismatch, timings, ...) from a metrics.jsonl; a plot
    whose metrics no record has (e.g. speculative ones of a run without drafting) is skipped.
    x is the rollout (eval: rollouts done, -1 = before the supervised warm-start)."""
    plt = _pyplot()
    records = read_records(metrics_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    series = dict(_PLOTS)
    eval_keys = sorted({k for r in records if "eval/step" in r for k in r if _is_accuracy(k)})
    series["eval_accuracy"] = (eval_keys, EVAL_YLABEL)
    depth_keys = {k for r in records for k in r if k.startswith(DEPTH_RATE_PREFIX)}
    depth_keys_sorted = sorted(depth_keys, key=lambda k: (len(k), k))  # depth2 < depth10
    series["speculative_depth"] = (depth_keys_sorted, DEPTH_YLABEL)
    written = []
    for name, (keys, ylabel) in series.items():
        fig, ax = plt.subplots(figsize=(6, 3.5))
        xs = _draw(ax, records, keys)
        if xs:
            _label_axes(ax, xs, name, ylabel, eval_axis=name == "eval_accuracy")
            fig.tight_layout()
            path = out_dir / f"{name}.png"
            fig.savefig(path, dpi=80)
            written.append(path)
        plt.close(fig)
    return written


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, without the "Matplotlib is building the font
    cache" line its first import on a machine logs."""
    font_log = logging.getLogger("matplotlib.font_manager")
    level = font_log.level
    font_log.setLevel(logging.ERROR)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    finally:
        font_log.setLevel(level)
    return plt


def _draw(ax: Any, records: list[dict[str, Any]], keys: list[str]) -> set[int]:
    """One line per metric against its axis (``eval/step`` or ``step``); the x values drawn."""
    drawn: set[int] = set()
    for key in keys:
        axis = "eval/step" if key.startswith("eval/") else "step"
        points = [
            (r[axis], r[key]) for r in records if axis in r and isinstance(r.get(key), (int, float))
        ]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", markersize=3, label=key)
            drawn.update(int(x) for x in xs)
    return drawn


def _label_axes(ax: Any, xs: set[int], title: str, ylabel: str, eval_axis: bool) -> None:
    """Units on y, whole rollouts on x, and the pre-warm-start point named."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("rollouts done" if eval_axis else "rollout")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    if -1 in xs:
        ax.axvline(-0.5, color="grey", linestyle=":", linewidth=1)  # the warm-start between
        ticks = sorted({-1, *(t for t in ax.get_xticks() if 0 <= t <= max(xs))})
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(
            FuncFormatter(lambda x, _: BEFORE_WARM_START if x == -1 else f"{x:.0f}")
        )
        ax.get_xticklabels()[0].set_horizontalalignment("right")  # clear of the 0 tick
    ax.legend(fontsize=7)


def _is_accuracy(key: str) -> bool:
    """``eval/<name>`` itself, not its ``eval/<name>/...`` or ``eval/<name>-...`` details."""
    return (
        key.startswith("eval/")
        and key != "eval/step"
        and "/" not in key[5:]
        and not key.endswith(("-truncated_ratio", "-none_reward_ratio"))
    )
