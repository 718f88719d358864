"""``python launch.py --help`` and ``python launch.py +describe=<group>``, answered without Hydra.

The help page is built from what is on disk, so it cannot go stale: the groups and their options
from ``conf/``, each option's first comment line, the defaults from ``conf/config.yaml``, the
experiments and the sweep presets; ``+describe`` prints a group's fields with their doc comments,
types and defaults (``miles_hydra.config.docs``), or what one preset sets. Both run in a fraction
of a second because nothing here composes a config. Hydra's own page stays at ``--hydra-help``.
"""

from __future__ import annotations

import difflib
import re
import shutil
import sys
import textwrap
import typing
from pathlib import Path

import yaml

from miles_hydra.config.algorithm import CorrectionConfig
from miles_hydra.config.docs import field_docs
from miles_hydra.config.run import RunConfig

REPO = Path(__file__).resolve().parents[2]
CONF_DIR = REPO / "conf"
SWEEPS_DIR = REPO / "sweeps"

# Group order on the page: what a researcher picks first comes first.
GROUP_ORDER = (
    "model",
    "parallelism",
    "precision",
    "speculative",
    "algorithm",
    "algorithm/correction",
    "rollout",
    "data",
    "reward",
    "checkpoint",
    "cluster",
    "logging",
    "backend",
)
# Overrides most runs touch; a test checks that every key exists in the schema.
COMMON_OVERRIDES = (
    ("algorithm.lr=3e-6", "learning rate of the policy"),
    ("rollout.num_rollout=50", "rollout/train iterations"),
    ("rollout.rollout_batch_size=16", "prompts per rollout (the batch invariant is checked)"),
    ("seed=2", "seed of data, sampling and init"),
    ("backend.device=cuda", "local engine on the GPU (auto picks it when there is one)"),
    ("cluster=slurm cluster.partition=gpu", "submit to Slurm (one job; -m: one array)"),
    ("checkpoint.load=<dir>", "start from a checkpoint"),
    ("experiment_name=<name>", "runs/<name>/<time>/ holds the run"),
)
USAGE = """\
usage: python launch.py [group=option ...] [group.key=value ...]   validate, then run or submit
       python launch.py -m key=a,b [key=c,d ...]                 a sweep: every combination
       python launch.py ... mode=plan     validate; print the resolved config, plan and checks
       python launch.py backend=miles ... mode=check      also parse the command with miles
       python launch.py +describe=<group>[/<option>]      a group's fields, or what a preset sets
"""


def answer(argv: list[str]) -> int | None:
    """Print the help page or a description and return the exit code; None when ``argv`` asks
    for something else (a run, a plan, Hydra's own flags)."""
    if any(arg in ("--help", "-h") for arg in argv):
        print(render_help())
        return 0
    for arg in argv:
        if arg.startswith("+describe="):
            text, ok = describe(arg.partition("=")[2])
            print(text)
            return 0 if ok else 2
    return None


def render_help() -> str:
    width = min(shutil.get_terminal_size((100, 24)).columns, 120)
    groups = _options()
    defaults = _defaults()
    out = [
        "miles_hydra: RL post-training from one validated config (embedded engine or miles).",
        "",
        USAGE,
        "config groups (group=option):",
    ]
    for group in GROUP_ORDER + tuple(sorted(set(groups) - set(GROUP_ORDER) - {"experiment"})):
        default = defaults.get(group)
        out.append(f"  {group}" + (f"  (default: {default})" if default else ""))
        for option in groups.get(group, []):
            out.append(_row(f"    {option}", _summary(CONF_DIR / group / f"{option}.yaml"), width))
    out += ["", "experiments (experiment=<name>: deltas on top of the groups above):"]
    for option in groups.get("experiment", []):
        out.append(_row(f"  {option}", _summary(CONF_DIR / "experiment" / f"{option}.yaml"), width))
    out += ["", "sweeps (python launch.py -m +sweep=<name>):"]
    for path in sorted(SWEEPS_DIR.glob("*.yaml")):
        out.append(_row(f"  {path.stem}", _summary(path), width))
    out += ["", "common overrides:"]
    out += [_row(f"  {override}", why, width) for override, why in COMMON_OVERRIDES]
    out += [
        "",
        "per-user settings (partition, account, paths): conf/local/default.yaml (git-ignored),",
        "  e.g.  cluster: {partition: h100, account: myteam}",
        "more:  +describe=<group> lists every key;  --cfg job prints the composed config;",
        "       --hydra-help is Hydra's own page;  README.md has the tour.",
    ]
    return "\n".join(out)


def describe(target: str) -> tuple[str, bool]:
    """The fields of a group (``rollout``, ``algorithm.correction``), or the values one preset
    sets (``model/qwen3_4b``). Returns the text and whether ``target`` named something."""
    target = target.strip()
    groups = _options()
    if target.replace(".", "/") in set(groups) | set(_schemas()):  # algorithm.correction
        target = target.replace(".", "/")
    if target in groups and "/" in target and target not in _schemas():
        return _describe_options(target, groups[target]), True
    if target in _schemas():
        return _describe_group(target, groups.get(target, [])), True
    group, _, option = target.rpartition("/")
    if group in groups and option in groups[group]:
        return _describe_preset(group, option), True
    names = sorted(set(groups) | set(_schemas())) + [
        f"{g}/{o}" for g, opts in groups.items() for o in opts
    ]
    close = difflib.get_close_matches(target, names, n=3)
    hint = f"did you mean {' or '.join(close)}?" if close else "groups: " + ", ".join(GROUP_ORDER)
    return f"miles_hydra: +describe={target}: no such group or preset; {hint}", False


def _describe_group(group: str, options: list[str]) -> str:
    docs = field_docs(_schemas()[group])
    width = max(len(d.name) for d in docs) + 2
    out = [f"{group}: {_schema_summary(group)}", ""]
    for d in docs:
        out.append(f"  {group.replace('/', '.')}.{d.name:<{width}}{d.doc}")
        out.append(f"  {'':<{len(group) + 1 + width}}{d.type}; default {d.default}")
    if options:
        out += ["", f"presets ({group}=<option>): {', '.join(options)}"]
        out.append(f"what one sets: python launch.py +describe={group}/{options[0]}")
    return "\n".join(out)


def _describe_preset(group: str, option: str) -> str:
    path = CONF_DIR / group / f"{option}.yaml"
    text = path.read_text()
    body = [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    data = yaml.safe_load("\n".join(body)) or {}
    selects = [_selection(entry) for entry in data.pop("defaults", None) or []]
    selects = [choice for choice in selects if choice]
    shown = yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip()
    header = f"{group}={option}  ({path.relative_to(REPO)})"
    about = textwrap.fill(_comment_block(path), width=min(shutil.get_terminal_size().columns, 100))
    out = [header, about, ""]
    if selects:
        out.append("selects: " + "  ".join(selects))
    return "\n".join(out + ["sets:", textwrap.indent(shown, "  ")])


def _selection(entry: object) -> str | None:
    """``model=tiny_moe`` for a defaults entry ``override /model: tiny_moe`` (schema links and
    ``_self_`` are not selections)."""
    if not isinstance(entry, dict):
        return None
    ((key, value),) = entry.items()
    group = key.removeprefix("override").strip().lstrip("/").split("@")[0]
    return None if group.startswith("schema") else f"{group}={value}"


def _describe_options(group: str, options: list[str]) -> str:
    return "\n".join(
        [f"{group}:"] + [f"  {o:<24}{_summary(CONF_DIR / group / f'{o}.yaml')}" for o in options]
    )


def _schemas() -> dict[str, type]:
    """``group -> schema``: the RunConfig fields named like groups, and the correction subgroup."""
    hints = typing.get_type_hints(RunConfig)
    schemas = {name: hints[name] for name in GROUP_ORDER if "/" not in name}
    schemas["algorithm/correction"] = CorrectionConfig
    return schemas


def _schema_summary(group: str) -> str:
    """The schema's own docstring, else its module's first line without the "`x` group:" lead."""
    schema = _schemas()[group]
    doc = schema.__doc__ or ""
    if doc.startswith(f"{schema.__name__}("):  # the signature dataclasses put there
        doc = sys.modules[schema.__module__].__doc__ or ""
    first = doc.strip().splitlines()[0] if doc.strip() else ""
    return re.sub(r"^`[\w/]+` group:\s*", "", first)


def _options() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        rel = path.relative_to(CONF_DIR)
        if len(rel.parts) >= 2 and rel.parts[0] != "local":
            out.setdefault("/".join(rel.parts[:-1]), []).append(rel.stem)
    return out


def _defaults() -> dict[str, str]:
    entries = yaml.safe_load((CONF_DIR / "config.yaml").read_text()).get("defaults", [])
    out = {}
    for entry in entries:
        if isinstance(entry, dict):
            for key, value in entry.items():
                if isinstance(value, str):
                    out[key.removeprefix("optional ").strip()] = value
    for path in (CONF_DIR / "algorithm").glob("*.yaml"):  # the correction default of grpo
        if path.stem == out.get("algorithm"):
            for entry in yaml.safe_load(path.read_text()).get("defaults", []) or []:
                if isinstance(entry, dict) and "correction" in entry:
                    out["algorithm/correction"] = entry["correction"]
    return out


def _comment_block(path: Path) -> str:
    """The leading comment lines of a YAML file, joined (``# @package`` lines skipped)."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            if lines:
                break
            continue
        text = line.lstrip("#").strip()
        if text.startswith("@package"):
            continue
        lines.append(text)
    return " ".join(lines)


def _summary(path: Path) -> str:
    """The first sentence of a preset's comment block ("e.g." and "i.e." do not end one)."""
    block = _comment_block(path)
    match = re.search(r"(?<!e\.g)(?<!i\.e)\.\s", block + " ")
    return (block[: match.start()] if match else block).rstrip(".")


def _row(left: str, right: str, width: int, column: int = 30) -> str:
    """``left`` and ``right`` in two columns, cut to the terminal width."""
    if not right:
        return left
    line = f"{left:<{column - 2}}  {right}" if len(left) <= column - 2 else f"{left}  {right}"
    return line if len(line) <= width else line[: width - 3].rstrip() + "..."
