"""Regenerate tests/miles/golden/<combo>.txt: the compiled miles argv + env of every valid combo.

    python scripts/regen_miles_golden.py

Review the diff (git diff tests/miles/golden) before committing: every changed line is a change
in the command miles will receive.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from support.combos import GOLDEN_DIR, all_combos, golden_text, split_valid  # noqa: E402

from miles_hydra.backends.miles.compile import compile_miles  # noqa: E402


def main() -> int:
    combos = all_combos()
    valid, refused = split_valid(combos)
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    wanted = set()
    for combo in combos:
        if combo.name not in valid:
            continue
        cmd = compile_miles(valid[combo.name])
        path = GOLDEN_DIR / f"{combo.name}.txt"
        path.write_text(golden_text(combo, cmd.entry, cmd.argv, cmd.env))
        wanted.add(path.name)
    stale = [p for p in GOLDEN_DIR.glob("*.txt") if p.name not in wanted]
    for path in stale:
        path.unlink()
    print(
        f"wrote {len(wanted)} golden files to {GOLDEN_DIR} ({len(refused)} combos refused by "
        f"validation, {len(stale)} stale files removed)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
