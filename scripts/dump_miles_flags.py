"""Dump the pinned miles release's flags and function index (check/miles_*_v0.1.0.json).

    python scripts/dump_miles_flags.py                    # oracle venv + v0.1.0 overlay
    python scripts/dump_miles_flags.py -o flags.json --python python3 --release ""  # in an image

Two files, both read by mode=check (miles_hydra/backends/miles/check/):
- the flag table (name, dest, type, choices, nargs, action, default of every train.py flag),
  from v0.1.0's own parser run in the oracle venv with the v0.1.0 `miles` package source on
  PYTHONPATH over the wheel's (scripts/setup_miles_oracle.sh builds the overlay); the
  `--sglang-*` flags follow the SGLang of the overlay (PyPI 0.5.16, what sglang-miles forks);
- the function index: every module of the release's miles/, miles_plugins/ and examples/ with
  its top-level names, read statically (ast), so that emitted function paths can be resolved.
Regenerate both whenever the pinned miles changes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from miles_hydra.backends.miles.check.flags import DEFAULT_TABLE  # noqa: E402
from miles_hydra.backends.miles.check.functions import (  # noqa: E402
    DEFAULT_INDEX,
    INDEXED_PACKAGES,
    index_source,
)
from miles_hydra.backends.miles.check.oracle import (  # noqa: E402
    PINNED_RELEASE,
    dump_flags,
    oracle_python,
)

DEFAULT_SRC = REPO_ROOT.parent / "shared" / "reference" / "miles-v0.1.0"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=DEFAULT_TABLE, help="flag table JSON")
    parser.add_argument("--index-out", type=Path, default=DEFAULT_INDEX, help="function index")
    parser.add_argument(
        "--python", default=None, help="interpreter with miles installed (default: oracle venv)"
    )
    parser.add_argument(
        "--release", default=PINNED_RELEASE, help="overlay to use; '' = the python's own miles"
    )
    parser.add_argument(
        "--src",
        type=Path,
        default=Path(os.environ.get("MILES_V010_SRC", DEFAULT_SRC)),
        help="the release's source tree (for the function index)",
    )
    args = parser.parse_args()
    python = args.python or oracle_python()
    if python is None:
        print("no miles oracle venv: run scripts/setup_miles_oracle.sh first", file=sys.stderr)
        return 1
    dump_flags(args.out, python, release=args.release or None)
    table = json.loads(args.out.read_text())
    print(f"wrote {len(table['actions'])} actions ({table['meta']}) to {args.out}")
    modules = index_source(args.src, INDEXED_PACKAGES)
    meta = {"release": args.release or "unknown", "source": args.src.name}
    args.index_out.write_text(json.dumps({"meta": meta, "modules": modules}, sort_keys=True) + "\n")
    print(f"wrote {len(modules)} modules of {args.src.name} to {args.index_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
