"""Fast table check of a miles argv against a dump of miles' parser (scripts/dump_miles_flags.py).

No miles import, milliseconds per argv. Catches what argparse would reject: an unknown flag (the
Megatron parser has allow_abbrev=False, so prefixes count as unknown), a missing value, a value
given to a store_true flag, a wrong type, a value outside the choices. Semantic rules (the batch
invariant, KL needs --ref-load, ...) are left to the real parser (oracle.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

DEFAULT_TABLE = Path(__file__).with_name("miles_flags_v0.1.0.json")  # the pinned release
# argparse actions that consume no value.
ZERO_ARG_ACTIONS = {
    "_StoreTrueAction",
    "_StoreFalseAction",
    "_StoreConstAction",
    "_CountAction",
    "BooleanOptionalAction",
    "DeprecatedStoreTrueAction",
    "_HelpAction",
}


@dataclass(frozen=True)
class FlagSpec:
    """One parser action, as dumped."""

    flags: tuple[str, ...]  # option strings, e.g. ("--offload-train", "--no-offload-train")
    dest: str  # attribute name on args
    type: Optional[str]  # type callable's name: int, float, str, loads, ... or None
    choices: Optional[tuple[Any, ...]]  # allowed values, or None
    nargs: Any  # None (one value), "?", "*", "+", or an int
    action: str  # argparse action class name


@dataclass(frozen=True)
class FlagProblem:
    """One thing argparse would reject."""

    flag: str  # the offending option string (or value)
    why: str  # what is wrong, with the fix when there is one

    def __str__(self) -> str:
        return f"{self.flag}: {self.why}"


@lru_cache(maxsize=4)
def load_table(path: Path = DEFAULT_TABLE) -> dict[str, FlagSpec]:
    """Option string -> FlagSpec for every action in a dump."""
    table: dict[str, FlagSpec] = {}
    for a in json.loads(Path(path).read_text())["actions"]:
        choices = a["choices"]
        if isinstance(choices, str):  # an enum list dumped as its repr: "[<AttnBackend.flash: 1>]"
            choices = re.findall(r"<\w+\.(\w+):", choices)
        elif choices is not None and a["type"] == "enum_type_handler":  # ["AttnBackend.flash"]
            choices = [str(c).rsplit(".", 1)[-1] for c in choices]
        spec = FlagSpec(
            flags=tuple(a["flags"]),
            dest=a["dest"],
            type=a["type"],
            choices=None if choices is None else tuple(choices),
            nargs=a["nargs"],
            action=a["action"],
        )
        for flag in spec.flags:
            table[flag] = spec
    return table


def check_argv(argv: list[str], table_path: Path = DEFAULT_TABLE) -> list[FlagProblem]:
    """Every problem the parser's flag table finds in `argv` (empty list = clean)."""
    table = load_table(Path(table_path))
    problems: list[FlagProblem] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if not _is_option(token):
            problems.append(FlagProblem(token, "value without a flag (stray positional)"))
            i += 1
            continue
        flag, _, inline = token.partition("=")
        spec = table.get(flag)
        if spec is None:
            problems.append(FlagProblem(flag, "unknown to miles' parser" + _suggest(flag, table)))
            i += 1
            while i < len(argv) and not _is_option(argv[i]):
                i += 1
            continue
        values, i = _take_values(argv, i + 1, spec, inline if "=" in token else None)
        problems.extend(_check_values(flag, spec, values))
    return problems


def _is_option(token: str) -> bool:
    """argparse's rule: '-x...' is an option unless it looks like a negative number."""
    if not token.startswith("-") or token == "-":
        return False
    try:
        float(token)
    except ValueError:
        return True
    return False


def _take_values(
    argv: list[str], i: int, spec: FlagSpec, inline: Optional[str]
) -> tuple[list[str], int]:
    if inline is not None:
        return [inline], i
    values = []
    while i < len(argv) and not _is_option(argv[i]):
        values.append(argv[i])
        i += 1
    return values, i


def _check_values(flag: str, spec: FlagSpec, values: list[str]) -> list[FlagProblem]:
    nargs = spec.nargs
    if spec.action in ZERO_ARG_ACTIONS or nargs == 0:
        if values:
            return [FlagProblem(flag, f"takes no value (a switch) but got {values!r}")]
        return []
    if nargs is None and len(values) != 1:
        return [FlagProblem(flag, f"takes exactly one value, got {len(values)}: {values!r}")]
    if nargs == "+" and not values:
        return [FlagProblem(flag, "takes one or more values, got none")]
    if nargs == "?" and len(values) > 1:
        return [FlagProblem(flag, f"takes at most one value, got {values!r}")]
    if isinstance(nargs, int) and len(values) != nargs:
        return [FlagProblem(flag, f"takes {nargs} values, got {len(values)}: {values!r}")]
    problems = []
    for value in values:
        converted, why = _convert(spec.type, value)
        if why:
            problems.append(FlagProblem(flag, why))
        elif spec.choices is not None and converted not in spec.choices:
            choices = ", ".join(str(c) for c in spec.choices)
            problems.append(FlagProblem(flag, f"{value!r} is not one of: {choices}"))
    return problems


def _convert(type_name: Optional[str], value: str) -> tuple[Any, str]:
    """(converted value, '' ) or (None, why); unknown custom types pass unchecked."""
    try:
        if type_name == "int":
            return int(value), ""
        if type_name == "float":
            return float(value), ""
        if type_name == "loads":
            return json.loads(value), ""
    except ValueError:
        return None, f"{value!r} is not a valid {type_name}"
    return value, ""


def _suggest(flag: str, table: dict[str, FlagSpec]) -> str:
    import difflib

    close = difflib.get_close_matches(flag, list(table), n=1, cutoff=0.8)
    return f"; did you mean {close[0]}?" if close else ""
