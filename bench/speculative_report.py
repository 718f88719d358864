"""Report of bench/bench_speculative.py: summary table, ratios and per-step curves (markdown),
and the curves as a PNG. Pure functions of the ``result`` dict that ``main`` builds (so a saved
``results.json`` can be re-rendered)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

LABELS = {"none": "none", "mtp": "frozen", "mtp_online": "online"}
DEPTH_METRIC = "rollout/spec_accept_rate_depth"  # + i: P(draft i accepted | 1..i-1 accepted)
DEPTH_KEY = "accept_rate_depth"  # + i: the same in a per-rollout row of results.json


def depth_rates(record: dict[str, Any]) -> dict[str, float]:
    """The per-draft-position acceptance of one metrics.jsonl record as step-row fields
    (``accept_rate_depth{i}``); {} for records that have none (no drafting, older runs)."""
    return {
        DEPTH_KEY + k[len(DEPTH_METRIC) :]: v
        for k, v in record.items()
        if k.startswith(DEPTH_METRIC)
    }


def _depths(steps: list[dict[str, Any]]) -> list[int]:
    found = {int(k[len(DEPTH_KEY) :]) for s in steps for k in s if k.startswith(DEPTH_KEY)}
    return sorted(found)


def _mean(values: list[Optional[float]]) -> Optional[float]:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def summarize(run: dict[str, Any]) -> dict[str, Any]:
    """Means over rollouts 1.. (rollout 0 pays first-call allocations)."""
    steps = run["steps"][1:] or run["steps"]
    rate = _mean([s["accept_rate"] for s in steps])
    third = max(1, len(run["steps"]) // 3)
    last_eval = run["eval"][max(run["eval"])] if run["eval"] else None
    last = run["steps"][-third:]
    depth_last = {i: _mean([s.get(f"{DEPTH_KEY}{i}") for s in last]) for i in _depths(last)}
    return {
        "tok_s_mean": _mean([s["tok_s"] for s in steps]),
        "tok_s_total": sum(s["tokens"] for s in steps) / sum(s["rollout_time"] for s in steps),
        "accept_length": _mean([s["accept_length"] for s in steps]),
        "accept_rate": rate,
        "per_verify": None if rate is None else 1 + run.get("num_steps", 0) * rate,
        "accept_length_first": _mean([s["accept_length"] for s in run["steps"][:third]]),
        "accept_length_last": _mean([s["accept_length"] for s in run["steps"][-third:]]),
        "mtp_loss": _mean([s["mtp_loss"] for s in steps]),
        "drift_kl_last": _mean([s["drift_kl"] for s in run["steps"][-third:]]),
        "reward": _mean([s["reward"] for s in steps]),
        "eval_last": last_eval,
        "accept_rate_depth_last": {i: r for i, r in depth_last.items() if r is not None},
    }


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _ratio(a: Optional[float], b: Optional[float]) -> str:
    return "—" if a is None or not b else f"{a / b:.3f}"


def render_report(result: dict[str, Any]) -> str:
    """Markdown: set-up, summary table, ratios, per-step curves."""
    runs = result["runs"]
    summary = {mode: summarize(run) for mode, run in runs.items()}
    lines = [
        f"Command: `{result['command']}`",
        "",
        f"Environment: {json.dumps(result['environment'])}",
        "",
        "| mode | tok/s (mean) | tok/s (total) | accept len | accept rate | 1+k*rate | accept len "
        "first/last third | mtp_loss | drift KL (last third) | reward | eval acc (last) "
        "| wall s | load avg before -> after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, s in summary.items():
        run = runs[mode]
        lines.append(
            f"| {LABELS[mode]} | {_fmt(s['tok_s_mean'], 1)} | {_fmt(s['tok_s_total'], 1)} "
            f"| {_fmt(s['accept_length'])} | {_fmt(s['accept_rate'])} | {_fmt(s['per_verify'])} "
            f"| {_fmt(s['accept_length_first'])} / {_fmt(s['accept_length_last'])} "
            f"| {_fmt(s['mtp_loss'])} | {_fmt(s['drift_kl_last'], 4)} | {_fmt(s['reward'])} "
            f"| {_fmt(s['eval_last'])} | {run['wall_s']:.0f} "
            f"| {run['load_before'][0]:.2f} -> {run['load_after'][0]:.2f} |"
        )
    lines += ["", "| ratio | tok/s (mean) | tok/s (total) | accept len |", "|---|---|---|---|"]
    for a, b in (("mtp", "none"), ("mtp_online", "none"), ("mtp_online", "mtp")):
        if a in summary and b in summary:
            sa, sb = summary[a], summary[b]
            lines.append(
                f"| {LABELS[a]}/{LABELS[b]} | {_ratio(sa['tok_s_mean'], sb['tok_s_mean'])} "
                f"| {_ratio(sa['tok_s_total'], sb['tok_s_total'])} "
                f"| {_ratio(sa['accept_length'], sb['accept_length'])} |"
            )
    depth = depth_table(summary)
    lines += ["", depth] if depth else []
    results = result.get("per_seed", [result])
    lines += ["", per_seed_table(results)]
    return "\n".join(lines + ["", curves_table(runs), ""])


def depth_table(summary: dict[str, dict[str, Any]]) -> str:
    """Acceptance per draft position (last-third means): where the draft chain breaks. Empty
    when no mode logged ``rollout/spec_accept_rate_depth*`` (older results)."""
    per_mode = {m: s["accept_rate_depth_last"] for m, s in summary.items()}
    depths = sorted({i for rates in per_mode.values() for i in rates})
    if not depths:
        return ""
    rows = [
        "Acceptance per draft position, P(draft i accepted given drafts 1..i-1 were), "
        "mean over the last third of rollouts:",
        "",
        "| mode | " + " | ".join(f"depth {i}" for i in depths) + " |",
        "|---|" + "---|" * len(depths),
    ]
    for mode, rates in per_mode.items():
        if rates:
            rows.append(
                f"| {LABELS[mode]} | " + " | ".join(_fmt(rates.get(i)) for i in depths) + " |"
            )
    return "\n".join(rows)


def per_seed_table(results: list[dict[str, Any]]) -> str:
    """Acceptance and drift of each seed (does the online draft win seed by seed?)."""
    rows = [
        "| seed | accept len frozen / online (mean) | last third frozen / online "
        "| drift KL last third none / frozen / online "
        "| same samples: frozen hit (warm policy) | frozen / online hit (final policy) |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        s = {mode: summarize(run) for mode, run in result["runs"].items()}
        f, o = s.get("mtp", {}), s.get("mtp_online", {})
        drift = " / ".join(_fmt(s[m]["drift_kl_last"], 3) for m in s)
        rows.append(
            f"| {result['environment']['seed']} "
            f"| {_fmt(f.get('accept_length'))} / {_fmt(o.get('accept_length'))} "
            f"| {_fmt(f.get('accept_length_last'))} / {_fmt(o.get('accept_length_last'))} "
            f"| {drift} | {_hits(result, 'warm_policy', 'frozen')} "
            f"| {_hits(result, 'final_policy', 'frozen')} / "
            f"{_hits(result, 'final_policy', 'online')} |"
        )
    return "\n".join(rows)


def curves_table(runs: dict[str, Any]) -> str:
    """Per-rollout curves as a markdown table (tok/s, acceptance, mtp loss, drift)."""
    modes = list(runs)
    spec = [m for m in modes if m != "none"]
    head = ["step", *(f"tok/s {LABELS[m]}" for m in modes)]
    head += [f"accept len {LABELS[m]}" for m in spec] + [f"accept rate {LABELS[m]}" for m in spec]
    head += ["mtp_loss online"] * ("mtp_online" in runs) + [f"drift KL {LABELS[m]}" for m in modes]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i in range(max(len(r["steps"]) for r in runs.values())):

        def cell(mode: str, key: str, digits: int = 3, i: int = i) -> str:
            steps = runs[mode]["steps"]
            return _fmt(steps[i][key], digits) if i < len(steps) else "—"

        row = [str(i), *(cell(m, "tok_s", 1) for m in modes)]
        row += [cell(m, "accept_length") for m in spec] + [cell(m, "accept_rate") for m in spec]
        row += [cell("mtp_online", "mtp_loss")] if "mtp_online" in runs else []
        row += [cell(m, "drift_kl", 4) for m in modes]
        rows.append("| " + " | ".join(row) + " |")
    return "\n".join(rows)


COLORS = {"none": "tab:gray", "mtp": "tab:blue", "mtp_online": "tab:orange"}  # same in every panel


def plot_curves(runs: dict[str, Any], path: Path) -> Optional[Path]:
    """tok/s, accept length and drift over rollouts; None when matplotlib is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels = [
        ("tok_s", "rollout tokens/s"),
        ("accept_length", "spec accept length"),
        ("accept_rate", "spec accept rate"),
        ("drift_kl", "KL(pi || warm-start)"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6))
    for ax, (key, title) in zip(axes, panels):
        for mode, run in runs.items():
            points = [(s["step"], s[key]) for s in run["steps"] if s[key] is not None]
            if points:
                ax.plot(*zip(*points), marker=".", label=LABELS[mode], color=COLORS.get(mode))
        ax.set_title(title)
        ax.set_xlabel("rollout")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def average_seeds(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``result`` whose per-rollout rows are means over seeds (a field is None when any
    seed lacks it), wall time summed, load averages from the first and last run."""
    first = results[0]
    runs: dict[str, Any] = {}
    for mode in first["runs"]:
        per_seed = [r["runs"][mode] for r in results]
        n = min(len(run["steps"]) for run in per_seed)
        steps = []
        for i in range(n):
            rows = [run["steps"][i] for run in per_seed]
            steps.append({key: _mean_all([row.get(key) for row in rows]) for key in rows[0]})
        evals = [run["eval"] for run in per_seed]
        common = set.intersection(*(set(e) for e in evals))
        runs[mode] = {
            **per_seed[0],
            "steps": steps,
            "eval": {k: sum(e[k] for e in evals) / len(evals) for k in common},
            "wall_s": sum(run["wall_s"] for run in per_seed),
            "load_after": per_seed[-1]["load_after"],
        }
    seeds = [r["environment"]["seed"] for r in results]
    env = {**first["environment"], "seed": f"mean over seeds {seeds}"}
    return {**first, "environment": env, "runs": runs, "per_seed": results}


def _hits(result: dict[str, Any], policy: str, draft: str) -> str:
    check = result["runs"].get("mtp_online", {}).get("draft_check") or {}
    return _fmt(check.get(policy, {}).get(f"{draft}_hit"))


def _mean_all(values: list[Optional[float]]) -> Optional[float]:
    return None if any(v is None for v in values) else sum(values) / len(values)
