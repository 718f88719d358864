"""Dump the installed miles parser's flags (name, dest, type, choices, nargs, action, default).

    python scripts/dump_miles_flags.py                    # oracle venv -> miles_flags_0.0.2.json
    python scripts/dump_miles_flags.py -o flags.json --python python3   # inside a miles image

The table check (miles_hydra/backends/miles/check/flags.py) reads the result. Regenerate it whenever the miles
you run changes: the `--sglang-*` flags follow the SGLang in the image.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from miles_hydra.backends.miles.check.oracle import dump_flags, oracle_python  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "miles_hydra" / "miles" / "miles_flags_0.0.2.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=DEFAULT_OUT, help="output JSON path")
    parser.add_argument(
        "--python", default=None, help="interpreter with miles installed (default: oracle venv)"
    )
    args = parser.parse_args()
    python = args.python or oracle_python()
    if python is None:
        print("no miles oracle venv: run scripts/setup_miles_oracle.sh first", file=sys.stderr)
        return 1
    dump_flags(args.out, python)
    table = json.loads(args.out.read_text())
    print(
        f"wrote {len(table['actions'])} actions of miles {table['meta']['miles_rl_version']} "
        f"to {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
