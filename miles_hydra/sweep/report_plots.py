"""The sweep report's PNGs: curves with 95% bands, final value per swept key, the 2-D heat map."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miles_hydra.sweep.stats import SEED_KEY, Group, t_quantile

if TYPE_CHECKING:
    from miles_hydra.sweep.report import Row


def write_plots(
    rows: list[Row], groups: list[Group], swept: list[str], metric: str, out: Path
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in swept if k != SEED_KEY]
    paths = [_curves(plt, rows, groups, metric, out)]
    paths += [p for k in keys if (p := _final_vs(plt, groups, k, metric, out)) is not None]
    if len(keys) == 2:
        heat = _heatmap(plt, groups, keys, metric, out)
        if heat is not None:
            paths.append(heat)
    return paths


def band(curves: list[list[tuple[int, float]]]) -> list[tuple[int, float, float, float]]:
    """(rollout, mean, low, high) over the seeds' curves, 95% CI where two or more have the
    rollout (a single value: low = high = mean)."""
    at: dict[int, list[float]] = {}
    for curve in curves:
        for x, y in curve:
            at.setdefault(x, []).append(y)
    out = []
    for x in sorted(at):
        ys = at[x]
        mean = statistics.fmean(ys)
        half = 0.0
        if len(ys) > 1:
            half = t_quantile(0.975, len(ys) - 1) * statistics.stdev(ys) / len(ys) ** 0.5
        out.append((x, mean, mean - half, mean + half))
    return out


def _label(g: Group) -> str:
    params = " ".join(f"{k.split('.')[-1]}={v}" for k, v in g.params.items()) or "all"
    return f"{params} (n={len(g.nums)})"


def _curves(plt: Any, rows: list[Row], groups: list[Group], metric: str, out: Path) -> Path:
    by_num = {r.num: r for r in rows}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for g in groups:
        curves = [by_num[n].curve for n in g.nums if by_num[n].curve]
        if not curves:
            continue
        points = band(curves)
        xs = [p[0] for p in points]
        (line,) = ax.plot(xs, [p[1] for p in points], marker=".", label=_label(g))
        if len(curves) > 1:
            ax.fill_between(
                xs,
                [p[2] for p in points],
                [p[3] for p in points],
                alpha=0.2,
                color=line.get_color(),
            )
        drawn = True
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole rollouts
    ax.set_xlabel("rollouts done" if metric.startswith("eval/") else "rollout")
    ax.set_ylabel(metric + " (mean over seeds, 95% band)")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=7)
    path = out / "curves.png"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _final_vs(plt: Any, groups: list[Group], key: str, metric: str, out: Path) -> Path | None:
    points = [(g.params.get(key), g) for g in groups if g.mean is not None]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs = [_as_number(x) for x, _ in points]
    numeric = all(isinstance(x, float) for x in xs)
    ax.errorbar(
        xs if numeric else [str(x) for x in xs],
        [g.mean for _, g in points],
        yerr=[g.half_width or 0.0 for _, g in points],
        fmt="o",
        capsize=3,
    )
    if numeric and min(xs) > 0 and max(xs) / min(xs) >= 100:  # type: ignore[operator]
        ax.set_xscale("log")
    ax.set_xlabel(key)
    ax.set_ylabel(f"final {metric}\n(mean, 95% CI)")
    ax.grid(alpha=0.3)
    path = out / f"final_vs_{key.replace('/', '_').replace('.', '_')}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _heatmap(plt: Any, groups: list[Group], keys: list[str], metric: str, out: Path) -> Path | None:
    """Mean final value over the grid of the two swept keys, each cell annotated mean ± CI."""
    ys, xs = (_axis_values(groups, k) for k in keys)
    if not groups or not any(g.mean is not None for g in groups):
        return None
    grid = [[float("nan")] * len(xs) for _ in ys]
    text = [[""] * len(xs) for _ in ys]
    for g in groups:
        if g.mean is None:
            continue
        i, j = ys.index(g.params[keys[0]]), xs.index(g.params[keys[1]])
        grid[i][j] = g.mean
        text[i][j] = f"{g.mean:.3g}" + (f"\n±{g.half_width:.2g}" if g.half_width else "")
    fig, ax = plt.subplots(figsize=(1.4 * len(xs) + 2.5, 1.0 * len(ys) + 2))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(xs)), xs)
    ax.set_yticks(range(len(ys)), ys)
    ax.set_xlabel(keys[1])
    ax.set_ylabel(keys[0])
    for i, row in enumerate(text):
        for j, cell in enumerate(row):
            if cell:
                ax.text(j, i, cell, ha="center", va="center", fontsize=8, backgroundcolor="white")
    fig.colorbar(image, ax=ax, label=f"final {metric} (mean)")
    path = out / "heatmap.png"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _axis_values(groups: list[Group], key: str) -> list[str]:
    values = list(dict.fromkeys(g.params.get(key, "") for g in groups))
    numbers = [_as_number(v) for v in values]
    if all(isinstance(n, float) for n in numbers):
        return [v for _, v in sorted(zip(numbers, values))]  # type: ignore[type-var]
    return values


def _as_number(value: str | None) -> float | str | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return value
