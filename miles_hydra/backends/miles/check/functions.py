"""Function paths in a miles argv (``--custom-tis-function-path pkg.mod.fn``, ``--spec mod fn``)
must resolve in the pinned miles release, or in miles_hydra itself (our rewards run inside miles).

miles loads them with ``load_function``: ``importlib.import_module(path.rpartition(".")[0])``
then ``getattr``. The index of what v0.1.0 defines (``miles_functions_v0.1.0.json``) is built
statically by scripts/dump_miles_flags.py from the release's source: every module under
``miles/``, ``miles_plugins/`` and ``examples/`` with its top-level names (def, class,
assignment, import), read with ``ast`` and never executed. Our own modules are indexed the same
way at check time. A path that names no module, or a name the module does not define, is a
problem that mode=check reports.
"""

from __future__ import annotations

import ast
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Optional

from miles_hydra.backends.miles.check.flags import FlagProblem

DEFAULT_INDEX = Path(__file__).with_name("miles_functions_v0.1.0.json")
INDEXED_PACKAGES = ("miles", "miles_plugins", "examples")  # what the release's image ships
OUR_PACKAGE = "miles_hydra"
_OUR_ROOT = Path(__file__).resolve().parents[4]  # the directory that holds miles_hydra/
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
# Values of *-path flags that are files, not functions, even when they look dotted.
_FILE_SUFFIXES = {"yaml", "yml", "json", "jsonl", "parquet", "txt", "py", "pt", "safetensors"}
_FILE_FLAGS = {"--custom-config-path"}


def index_source(root: Path, packages: tuple[str, ...]) -> dict[str, list[str]]:
    """{dotted module: sorted top-level names} for every .py file of `packages` under `root`."""
    index: dict[str, list[str]] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            index[".".join(parts)] = sorted(_top_level_names(path))
    return index


def _top_level_names(path: Path) -> set[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


@lru_cache(maxsize=4)
def load_index(path: Path = DEFAULT_INDEX) -> dict[str, frozenset[str]]:
    data = json.loads(Path(path).read_text())
    return {module: frozenset(names) for module, names in data["modules"].items()}


@lru_cache(maxsize=1)
def _our_index() -> dict[str, frozenset[str]]:
    return {m: frozenset(n) for m, n in index_source(_OUR_ROOT, (OUR_PACKAGE,)).items()}


def resolve(path: str, index: Optional[dict[str, frozenset[str]]] = None) -> str:
    """'' when `path` ("pkg.module.attr") resolves, else why not."""
    index = _our_index() if path.startswith(OUR_PACKAGE + ".") else (index or load_index())
    module, _, attr = path.rpartition(".")
    if module not in index:
        return f"module {module!r} does not exist in the pinned miles release"
    if attr not in index[module]:
        return f"{module!r} defines no {attr!r}"
    return ""


def function_paths(argv: list[str]) -> list[tuple[str, str]]:
    """(flag, dotted path) for every function path in `argv`: the values of ``--*-path`` flags
    that are dotted Python names (not files), and ``--spec MODULE NAME``."""
    found: list[tuple[str, str]] = []
    for i, token in enumerate(argv):
        if not token.startswith("--") or i + 1 >= len(argv):
            continue
        value = argv[i + 1]
        if token == "--spec" and i + 2 < len(argv):
            found.append((token, f"{value}.{argv[i + 2]}"))
        elif (
            token.endswith("-path")
            and token not in _FILE_FLAGS
            and _DOTTED.match(value)
            and value.rsplit(".", 1)[-1] not in _FILE_SUFFIXES
        ):
            found.append((token, value))
    return found


def function_path_problems(argv: list[str], index_path: Path = DEFAULT_INDEX) -> list[FlagProblem]:
    """Every function path in `argv` that the pinned release (or miles_hydra) does not define."""
    index = load_index(Path(index_path))
    problems = []
    for flag, path in function_paths(argv):
        why = resolve(path, index)
        if why:
            problems.append(FlagProblem(f"{flag} {path}", why))
    return problems
