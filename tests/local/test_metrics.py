"""The driver's metric helpers: miles' rollout metrics, resume truncation, plots, decoding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from miles_hydra.backends.local.evaluate import decode_response
from miles_hydra.backends.local.metrics import (
    read_records,
    rollout_metrics,
    truncate_records,
    write_plots,
)
from miles_hydra.tasks import build_tokenizer


def test_rollout_metrics_hand_checked() -> None:
    m = rollout_metrics(
        rewards=[1, 1, 0, 1, 0, 0],
        response_lengths=[2, 4, 6, 3, 3, 3],
        finished=[True, True, False, True, True, True],
        group_size=3,
    )
    assert m["rollout/raw_reward"] == pytest.approx(0.5)
    assert m["rollout/response_len/mean"] == pytest.approx(3.5)
    assert m["rollout/response_len/median"] == 3.0
    assert (m["rollout/response_len/max"], m["rollout/response_len/min"]) == (6.0, 2.0)
    assert m["rollout/truncated_ratio"] == pytest.approx(1 / 6)
    assert m["rollout/zero_std/all_zero_percentage"] == 0.0  # groups (1,1,0), (1,0,0)
    m = rollout_metrics([0, 0, 1, 1], [1, 1, 1, 1], [True] * 4, group_size=2)
    assert m["rollout/zero_std/count_0"] == 1.0 and m["rollout/zero_std/count_1"] == 1.0
    assert m["rollout/zero_std/all_one_percentage"] == 0.5


def test_truncate_records_drops_what_came_after_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    lines = [
        {"eval/step": -1, "eval/x": 0.0},
        {"eval/step": 0, "eval/x": 0.1},
        {"step": 0},
        {"step": 1},
        {"eval/step": 2, "eval/x": 0.2},
        {"step": 2},  # written after the checkpoint at 2 finished rollouts
        {"eval/step": 3, "eval/x": 0.3},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    truncate_records(path, start_step=2)
    assert read_records(path) == lines[:5]


def test_write_plots(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    records = [{"eval/step": 0, "eval/arithmetic": 0.2}, {"eval/step": 2, "eval/arithmetic": 0.5}]
    for step in range(3):
        records.append(
            {
                "step": step,
                "rollout/raw_reward": 0.1 * step,
                "train/train_rollout_logprob_abs_diff": 1e-7,
                "perf/rollout_time": 0.5,
                "perf/train_time": 0.4,
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    written = {p.name for p in write_plots(path, tmp_path / "plots")}
    assert written == {"reward.png", "eval_accuracy.png", "mismatch.png", "timings.png"}


def test_decode_response_marks_ids_outside_the_tokenizer() -> None:
    from miles_hydra.config.model import ModelConfig

    tok = build_tokenizer(ModelConfig())
    ids = tok.encode("12") + [tok.vocab_size + 3] + tok.encode("3") + [tok.eos_id] + tok.encode("9")
    assert decode_response(tok, ids) == "12\ufffd3"


def test_plot_axes_have_units_whole_rollouts_and_name_the_pre_warm_start_point() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from miles_hydra.backends.local.metrics import (
        BEFORE_WARM_START,
        EVAL_YLABEL,
        _draw,
        _label_axes,
    )

    records = [{"eval/step": s, "eval/arithmetic": 0.1 * (s + 1)} for s in (-1, 0, 5, 10, 15)]
    fig, ax = plt.subplots()
    xs = _draw(ax, records, ["eval/arithmetic"])
    _label_axes(ax, xs, "eval_accuracy", EVAL_YLABEL, eval_axis=True)
    fig.canvas.draw()
    assert ax.get_ylabel() == EVAL_YLABEL and ax.get_xlabel() == "rollouts done"
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0] == BEFORE_WARM_START
    assert all(label.isdigit() for label in labels[1:]) and "0" in labels
    assert all(float(t).is_integer() for t in ax.get_xticks())
    plt.close(fig)
