"""Sweep report: ``python -m miles_hydra.sweep.report <sweep_dir> [--metric KEY] [--mode max|min]``.

Collects every variant's metrics (also while jobs still run), writes ``report/summary.csv``,
``report/summary.md`` and plots (final metric against each swept parameter; the metric's curve
per variant), and names the best variant. Failed and pending variants are listed as such.
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

FALLBACK_METRIC = "rollout/raw_reward"


@dataclass
class Row:
    num: int  # variant number
    params: dict[str, str]  # swept key -> value
    state: str  # pending | running | completed | failed | preempted | unknown
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, metric)
    error: str = ""  # failure reason, if any

    @property
    def final(self) -> float | None:
        return self.curve[-1][1] if self.curve else None


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


def collect(sweep_dir: Path, metric: str | None = None) -> tuple[list[Row], list[str], str]:
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
        curve = [
            (int(r.get("step", i)), float(r[metric]))
            for i, r in enumerate(all_records[v.num])
            if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])
        ]
        rows.append(
            Row(v.num, params, status.get("state", "unknown"), curve, status.get("error", ""))
        )
    return rows, swept, metric


def best_row(rows: list[Row], mode: str) -> Row | None:
    done = [r for r in rows if r.final is not None and r.state == "completed"]
    candidates = done or [r for r in rows if r.final is not None]
    if not candidates:
        return None
    return (max if mode == "max" else min)(candidates, key=lambda r: r.final)


def write_tables(
    rows: list[Row], swept: list[str], metric: str, out: Path, best: Row | None
) -> str:
    out.mkdir(parents=True, exist_ok=True)
    header = ["variant", *swept, "state", "steps", f"final {metric}", "best"]
    table = []
    for r in rows:
        final = "" if r.final is None else f"{r.final:.4g}"
        mark = "*" if best is not None and r.num == best.num else ""
        steps = str(r.curve[-1][0]) if r.curve else ""
        table.append(
            [str(r.num), *(r.params.get(k, "") for k in swept), r.state, steps, final, mark]
        )
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(table)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    markdown = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(markdown)
    return markdown


def write_plots(rows: list[Row], swept: list[str], metric: str, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for key in swept:
        points = [(r.params.get(key), r.final) for r in rows if r.final is not None]
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.5))
        xs = [_as_number(x) for x, _ in points]
        if all(isinstance(x, float) for x in xs):
            ax.scatter(xs, [y for _, y in points])
            if min(xs) > 0 and max(xs) / min(xs) >= 100:
                ax.set_xscale("log")
        else:
            ax.scatter([str(x) for x, _ in points], [y for _, y in points])
        ax.set_xlabel(key)
        ax.set_ylabel(f"final {metric}")
        ax.grid(alpha=0.3)
        path = out / f"final_vs_{key.replace('/', '_').replace('.', '_')}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        if r.curve:
            label = f"#{r.num} " + " ".join(f"{k.split('.')[-1]}={v}" for k, v in r.params.items())
            ax.plot([s for s, _ in r.curve], [v for _, v in r.curve], label=label, marker=".")
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if any(r.curve for r in rows):
        ax.legend(fontsize=7)
    path = out / "curves.png"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [*paths, path]


def _as_number(value: str | None) -> float | str | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return value


def report(sweep_dir: Path, metric: str | None = None, mode: str = "max") -> dict[str, Any]:
    rows, swept, metric = collect(sweep_dir, metric)
    best = best_row(rows, mode)
    out = sweep_dir / "report"
    markdown = write_tables(rows, swept, metric, out, best)
    plots = write_plots(rows, swept, metric, out)
    states: dict[str, int] = {}
    for r in rows:
        states[r.state] = states.get(r.state, 0) + 1
    summary = {
        "metric": metric,
        "mode": mode,
        "states": states,
        "best": None
        if best is None
        else {"variant": best.num, "params": best.params, "value": best.final},
        "table": markdown,
        "plots": [str(p) for p in plots],
    }
    (out / "best.json").write_text(
        json.dumps({k: v for k, v in summary.items() if k != "table"}, indent=2)
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m miles_hydra.sweep.report", description=__doc__)
    parser.add_argument("sweep_dir", type=Path, help="the sweep's directory (holds sweep.json)")
    parser.add_argument("--metric", default=None, help="metric to rank by (default: first eval/*)")
    parser.add_argument(
        "--mode", choices=["max", "min"], default="max", help="maximize or minimize"
    )
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"no such sweep directory: {args.sweep_dir}", file=sys.stderr)
        return 2
    summary = report(args.sweep_dir, args.metric, args.mode)
    print(summary["table"])
    print("states:", ", ".join(f"{k}={v}" for k, v in sorted(summary["states"].items())))
    best = summary["best"]
    if best is None:
        print(f"no variant has reported {summary['metric']} yet")
    else:
        params = " ".join(f"{k}={v}" for k, v in best["params"].items())
        print(
            f"best ({summary['mode']} {summary['metric']}): variant {best['variant']} {params} -> {best['value']:.4g}"
        )
    print(f"report written to {args.sweep_dir / 'report'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
