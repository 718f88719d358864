"""Sweep report: ``python -m miles_hydra.sweep.report <sweep_dir> [--metric KEY] [--mode max|min]
[--last N]``.

Collects every variant's metrics (also while jobs still run) and writes ``report/``:

- ``summary.md``: the verdict, then one row per setting (variants that differ only by
  ``seed`` aggregated: mean, 95% confidence interval, n) and one row per variant;
- ``groups.csv`` and ``summary.csv``: the same two tables;
- ``curves.png`` (the metric against rollouts, one line per setting with its 95% band),
  ``final_vs_<key>.png`` (final value against each swept key, with error bars) and, for a
  2-D grid, ``heatmap.png``; ``best.json``.

The x axis is the rollout (the ``step`` of rollout records, ``eval/step`` = rollouts done for
evaluations), never a line number; the evaluation before the warm-start (``eval/step`` -1) is
not a result. A variant's value is its last point, or with ``--last N`` the mean of its last N
points (a per-rollout metric such as ``rollout/raw_reward`` is one batch's worth of noise per
point). A running variant shows its latest value, marked as such. The best setting is
named only when it beats the runner-up beyond noise (``miles_hydra.sweep.stats``); otherwise
the tie is reported.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miles_hydra.sweep.manifest import METRICS, Manifest, Variant, read_status, swept_keys
from miles_hydra.sweep.stats import SEED_KEY, Group, Ranking, make_groups, rank

FALLBACK_METRIC = "rollout/raw_reward"


@dataclass
class Row:
    num: int  # variant number
    params: dict[str, str]  # swept key -> value
    state: str  # pending | running | completed | failed | preempted | pruned | unknown
    curve: list[tuple[int, float]] = field(default_factory=list)  # (rollout, metric), sorted
    rollouts: int = 0  # rollouts finished (highest rollout ``step`` + 1)
    error: str = ""  # failure reason, if any
    last: int = 1  # the value is the mean of this many last points

    @property
    def final(self) -> float | None:
        """The mean of the last ``last`` values (of a running variant: its latest, not its
        final)."""
        tail = [value for _, value in self.curve[-self.last :]]
        return sum(tail) / len(tail) if tail else None


def load_variants(sweep_dir: Path) -> tuple[list[Variant], list[str]]:
    """Variants from the manifest, or discovered from Hydra's per-job ``.hydra`` folders."""
    if (sweep_dir / "sweep.json").exists():
        manifest = Manifest.read(sweep_dir)
        return manifest.variants, manifest.swept
    import yaml

    variants = []
    for sub in sorted(sweep_dir.iterdir(), key=lambda p: (len(p.name), p.name)):
        overrides_file = sub / ".hydra" / "overrides.yaml"
        if sub.is_dir() and overrides_file.exists() and sub.name.isdigit():
            overrides = yaml.safe_load(overrides_file.read_text()) or []
            variants.append(Variant(num=int(sub.name), overrides=overrides, run_dir=sub.name))
    return variants, swept_keys([v.overrides for v in variants])


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line being written right now
    return records


def pick_metric(records: list[dict[str, Any]]) -> str:
    keys = sorted({k for r in records for k, v in r.items() if isinstance(v, (int, float))})
    evals = [k for k in keys if k.startswith("eval/") and not k.endswith(("_ratio", "/step"))]
    return evals[0] if evals else FALLBACK_METRIC


def metric_curve(records: list[dict[str, Any]], metric: str) -> list[tuple[int, float]]:
    """(rollout, value) of ``metric``: evaluations on ``eval/step`` (those before the warm-start
    dropped), everything else on ``step``; a step logged twice keeps its last value."""
    axis = "eval/step" if "eval/step" in _axes_of(records, metric) else "step"
    points: dict[int, float] = {}
    for r in records:
        value, x = r.get(metric), r.get(axis)
        if isinstance(x, int) and x >= 0 and _is_number(value):
            points[x] = float(value)
    return sorted(points.items())


def _axes_of(records: list[dict[str, Any]], metric: str) -> set[str]:
    return {a for r in records if metric in r for a in ("step", "eval/step") if a in r}


def rollouts_done(records: list[dict[str, Any]]) -> int:
    steps = [r["step"] for r in records if isinstance(r.get("step"), int)]
    return max(steps) + 1 if steps else 0


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def collect(
    sweep_dir: Path, metric: str | None = None, last: int = 1
) -> tuple[list[Row], list[str], str]:
    variants, swept = load_variants(sweep_dir)
    all_records = {v.num: read_metrics(sweep_dir / v.run_dir) for v in variants}
    if metric is None:
        metric = pick_metric([r for recs in all_records.values() for r in recs])
    rows = []
    for v in variants:
        params = {}
        for item in v.overrides:
            key, _, value = item.partition("=")
            if key.lstrip("+~") in swept:
                params[key.lstrip("+~")] = value
        status = read_status(sweep_dir / v.run_dir)
        records = all_records[v.num]
        rows.append(
            Row(
                v.num,
                params,
                status.get("state", "unknown"),
                metric_curve(records, metric),
                rollouts_done(records),
                status.get("error", ""),
                last,
            )
        )
    return rows, swept, metric


def group_rows(rows: list[Row], mode: str) -> tuple[list[Group], Ranking]:
    groups = make_groups([(r.num, r.params, r.state, r.final) for r in rows])
    return groups, rank(groups, mode)


def verdict(ranking: Ranking, metric: str, mode: str, states: dict[str, int] | None = None) -> str:
    """One line: the best setting, or why none is named."""
    if not ranking.order:
        if states and set(states) - {"pending", "running"}:
            counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
            return f"No setting has a finished {metric} to rank ({counts})."
        return f"No variant has reported {metric} yet."
    pre = "Provisional (no variant finished): " if ranking.provisional else ""
    if ranking.best is None:
        tied = "; ".join(_describe(g) for g in ranking.ties)
        how = "within their 95% confidence intervals" if ranking.tested else "with equal values"
        return f"{pre}No best: {len(ranking.ties)} settings tie {how} ({mode} {metric}): {tied}."
    runner = ranking.order[1] if len(ranking.order) > 1 else None
    beyond = (
        "beyond the 95% intervals of every other setting"
        if ranking.tested
        else "(single seed per setting: not tested against noise; sweep seed=1,2,3 to test it)"
    )
    vs = f", runner-up {_describe(runner)}" if runner is not None else ""
    return f"{pre}Best ({mode} {metric}): {_describe(ranking.best)} {beyond}{vs}."


def _describe(g: Group) -> str:
    params = " ".join(f"{k}={v}" for k, v in g.params.items()) or "(no swept key)"
    return f"{params} -> {_mean_ci(g)}"


def _mean_ci(g: Group) -> str:
    if g.mean is None:
        return ""
    if g.half_width is None:
        return f"{g.mean:.4g} (n={g.n})"
    return f"{g.mean:.4g} ± {g.half_width:.2g} (n={g.n})"


def write_tables(
    rows: list[Row],
    groups: list[Group],
    ranking: Ranking,
    swept: list[str],
    metric: str,
    mode: str,
    out: Path,
) -> str:
    out.mkdir(parents=True, exist_ok=True)
    states = _states(rows)
    keys = [k for k in swept if k != SEED_KEY]
    marks = {id(g): "tie" for g in ranking.ties}
    if ranking.best is not None:
        marks[id(ranking.best)] = "best"
    ranks = {id(g): i + 1 for i, g in enumerate(ranking.order)}
    g_header = [
        *keys,
        "n",
        f"mean {metric}",
        "ci95 low",
        "ci95 high",
        "variants",
        "rank",
        "verdict",
    ]
    g_table = []
    for g in groups:
        ci = g.ci
        g_table.append(
            [
                *(g.params.get(k, "") for k in keys),
                str(g.n) + (" (running)" if g.partial else ""),
                "" if g.mean is None else f"{g.mean:.4g}",
                "" if ci is None else f"{ci[0]:.4g}",
                "" if ci is None else f"{ci[1]:.4g}",
                " ".join(str(n) for n in g.nums),
                str(ranks.get(id(g), "")),
                marks.get(id(g), ""),
            ]
        )
    group_of = {n: g for g in groups for n in g.nums}
    v_header = ["variant", *swept, "state", "rollouts", "at rollout", metric, "final", "verdict"]
    v_table = []
    for r in rows:
        at, value = (str(r.curve[-1][0]), f"{r.final:.4g}") if r.curve else ("", "")
        final = "yes" if r.curve and r.state == "completed" else ("latest" if r.curve else "")
        v_table.append(
            [
                str(r.num),
                *(r.params.get(k, "") for k in swept),
                r.state,
                str(r.rollouts),
                at,
                value,
                final,
                marks.get(id(group_of[r.num]), ""),
            ]
        )
    _write_csv(out / "groups.csv", g_header, g_table)
    _write_csv(out / "summary.csv", v_header, v_table)
    markdown = "\n".join(
        [
            verdict(ranking, metric, mode, states),
            "",
            "Settings (variants differing only by seed aggregated; 95% CI of the mean):",
            "",
            _markdown(g_header, g_table),
            "Variants:",
            "",
            _markdown(v_header, v_table),
        ]
    )
    (out / "summary.md").write_text(markdown)
    return markdown


def _write_csv(path: Path, header: list[str], table: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(table)


def _markdown(header: list[str], table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join(lines) + "\n"


def report(
    sweep_dir: Path, metric: str | None = None, mode: str = "max", last: int = 1
) -> dict[str, Any]:
    from miles_hydra.sweep.report_plots import write_plots

    rows, swept, metric = collect(sweep_dir, metric, last)
    if last > 1:  # what every value in the tables is
        metric = f"{metric} (mean of last {last})"
    groups, ranking = group_rows(rows, mode)
    out = sweep_dir / "report"
    markdown = write_tables(rows, groups, ranking, swept, metric, mode, out)
    plots = write_plots(rows, groups, swept, metric, out)
    states = _states(rows)
    summary = {
        "metric": metric,
        "mode": mode,
        "states": states,
        "verdict": verdict(ranking, metric, mode, states),
        "best": None if ranking.best is None else _group_json(ranking.best),
        "tested": ranking.tested,
        "provisional": ranking.provisional,
        "ties": [_group_json(g) for g in ranking.ties],
        "groups": [_group_json(g) for g in ranking.order],
        "table": markdown,
        "plots": [str(p) for p in plots],
    }
    (out / "best.json").write_text(
        json.dumps({k: v for k, v in summary.items() if k != "table"}, indent=2)
    )
    return summary


def _states(rows: list[Row]) -> dict[str, int]:
    states: dict[str, int] = {}
    for r in rows:
        states[r.state] = states.get(r.state, 0) + 1
    return states


def _group_json(g: Group) -> dict[str, Any]:
    return {
        "variants": g.nums,
        "params": g.params,
        "value": g.mean,
        "ci95": None if g.ci is None else list(g.ci),
        "n": g.n,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m miles_hydra.sweep.report", description=__doc__)
    parser.add_argument("sweep_dir", type=Path, help="the sweep's directory (holds sweep.json)")
    parser.add_argument("--metric", default=None, help="metric to rank by (default: first eval/*)")
    parser.add_argument(
        "--mode", choices=["max", "min"], default="max", help="maximize or minimize"
    )
    parser.add_argument(
        "--last",
        type=int,
        default=1,
        help="a variant's value: the mean of its last N points (default 1: the last)",
    )
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"no such sweep directory: {args.sweep_dir}", file=sys.stderr)
        return 2
    if args.last < 1:
        print(f"--last {args.last}: must be >= 1 (points averaged per variant)", file=sys.stderr)
        return 2
    summary = report(args.sweep_dir, args.metric, args.mode, args.last)
    print(summary["table"])
    print("states:", ", ".join(f"{k}={v}" for k, v in sorted(summary["states"].items())))
    print(f"report written to {args.sweep_dir / 'report'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
