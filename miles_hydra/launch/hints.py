""" "Did you mean" hints for command-line overrides that Hydra will refuse as unknown.

Hydra's own error names the bad key or option and lists a group's options; these hints add the
closest valid spelling. ``typo_hints(argv)`` is pure and cheap (no compose): launch.py can print
its lines on stderr and exit 2 before Hydra starts, or print them next to Hydra's error.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path

from miles_hydra.config.run import RunConfig

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
SKIP_PREFIXES = ("+", "~", "-", "hydra.", "hydra/")  # appends, deletes, flags, Hydra's own keys


def typo_hints(argv: list[str], conf_dir: Path = CONF_DIR) -> list[str]:
    """One line per override whose key or option does not exist, with the closest match."""
    groups = _groups(conf_dir)
    hints = []
    for arg in argv:
        if "=" not in arg or arg.startswith(SKIP_PREFIXES):
            continue
        key, _, value = arg.partition("=")
        if key in groups and "." not in key:
            hints += _option_hints(key, value, groups[key])
        elif "/" not in key:
            hint = _key_hint(key, groups)
            if hint:
                hints.append(hint)
    return hints


def _groups(conf_dir: Path) -> dict[str, list[str]]:
    """``group`` (or ``group/sub``) -> its option names, from conf/<group>/*.yaml."""
    out: dict[str, list[str]] = {}
    for path in conf_dir.rglob("*.yaml"):
        rel = path.relative_to(conf_dir)
        if len(rel.parts) >= 2:
            out.setdefault("/".join(rel.parts[:-1]), []).append(rel.stem)
    return out


def _option_hints(group: str, value: str, options: list[str]) -> list[str]:
    hints: list[str] = []
    if "(" in value or "$" in value:  # sweeper syntax (choice(...), range(...)) or interpolation
        return hints
    for option in (v.strip() for v in value.split(",")):  # a -m sweep lists several
        if option and option not in options:
            close = difflib.get_close_matches(option, options, n=1)
            fix = (
                f"did you mean {group}={close[0]}?"
                if close
                else f"options: {', '.join(sorted(options))}"
            )
            hints.append(f"{group}={option}: no such option; {fix}")
    return hints


def _key_hint(key: str, groups: dict[str, list[str]]) -> str | None:
    """Walk the dotted key through the RunConfig dataclasses; hint at the first unknown part."""
    schema: typing.Any = RunConfig
    walked = []
    for part in key.split("."):
        if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
            return None  # a dict/list field (e.g. rollout.sglang.*): free-form keys
        names = [f.name for f in dataclasses.fields(schema)]
        if part not in names:
            where = ".".join(walked)
            candidates = names + ([g for g in groups if "/" not in g] if not walked else [])
            close = difflib.get_close_matches(part, candidates, n=2)
            full = f"{where}.{part}" if where else part
            prefix = f"{where}." if where else ""
            if close:
                fix = "did you mean " + " or ".join(prefix + c for c in close) + "?"
            else:
                fix = f"{where or 'the run config'} has no such key"
            return f"{full}: unknown key; {fix}"
        walked.append(part)
        schema = typing.get_type_hints(schema)[part]
    return None
