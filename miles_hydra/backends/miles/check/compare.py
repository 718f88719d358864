"""`python launch.py backend=miles mode=check`: verify the compiled command before it queues.

Two layers: the flag table and function index of the pinned miles v0.1.0 (miles_*_v0.1.0.json,
milliseconds, no miles needed: unknown flags, bad values, function paths that do not resolve in
v0.1.0) and, when a Python with miles is available (the oracle venv, with the v0.1.0 source
overlay when set up, or ``MILES_ORACLE_PYTHON=python3`` inside the miles image), miles' own
parse_args() with every validation it runs, whose derived values must equal what our config
planned.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from miles_hydra.backends.miles.check.flags import DEFAULT_TABLE, FlagProblem, check_argv
from miles_hydra.backends.miles.check.functions import function_path_problems
from miles_hydra.backends.miles.check.oracle import (
    PINNED_RELEASE,
    SETUP_HINT,
    OracleResult,
    oracle_python,
    parse_many,
    release_overlay,
)
from miles_hydra.backends.miles.compile import MilesCommand, compile_miles, plan_values
from miles_hydra.config.algorithm import AdvantageEstimator
from miles_hydra.config.run import RunConfig


@dataclass
class CheckReport:
    """Everything mode=check found about one config's miles command."""

    command: MilesCommand  # what would be submitted
    table: Path  # the flag table used for the fast check
    flag_problems: list[FlagProblem] = field(default_factory=list)  # table-check findings
    oracle: Optional[OracleResult] = None  # miles' own verdict; None if no miles available
    mismatches: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # key: (plan, miles)
    compared: int = 0  # derived values compared with the plan

    @property
    def ok(self) -> bool:
        oracle_ok = self.oracle is None or self.oracle.ok
        return not self.flag_problems and oracle_ok and not self.mismatches

    def render(self) -> str:
        lines = [f"miles command: python3 {shlex.join([self.command.entry, *self.command.argv])}"]
        lines.append(
            f"flag table + function paths ({self.table.name}): "
            + ("ok" if not self.flag_problems else f"{len(self.flag_problems)} problem(s)")
        )
        lines += [f"  {p}" for p in self.flag_problems]
        if self.oracle is None:
            lines.append(f"miles parser: skipped (no Python with miles; {SETUP_HINT})")
        elif not self.oracle.ok:
            lines.append(f"miles parser: REJECTED\n  {self.oracle.error}")
        else:
            lines.append(f"miles parser: ok ({self.oracle.seconds:.2f} s)")
            for key, (ours, theirs) in sorted(self.mismatches.items()):
                lines.append(f"  derived {key}: plan {ours!r} != miles {theirs!r}")
            if not self.mismatches:
                lines.append(f"  all {self.compared} derived values match the plan")
        lines.append("check: " + ("PASSED" if self.ok else "FAILED"))
        return "\n".join(lines)


def check_with_oracle(
    cfg: RunConfig, python: Optional[str] = None, table: Optional[Path] = None
) -> CheckReport:
    """Table-check and (if possible) parse the compiled command; compare derived values."""
    cmd = compile_miles(cfg)
    table = table or Path(os.environ.get("MILES_FLAGS_TABLE", DEFAULT_TABLE))
    problems = check_argv(cmd.argv, table) + function_path_problems(cmd.argv)
    report = CheckReport(command=cmd, table=table, flag_problems=problems)
    explicit = python or os.environ.get("MILES_ORACLE_PYTHON")
    python = python or oracle_python()
    if python is None:
        return report
    # the oracle venv parses with the pinned release's source when its overlay is set up
    release = PINNED_RELEASE if not explicit and release_overlay() else None
    report.oracle = parse_many({"check": cmd.argv}, python=python, release=release).results[0]
    if report.oracle.ok:
        planned = plan_values(cfg)
        skip = release_specific_keys(cfg, pinned=release is not None)
        report.mismatches = compare(planned, report.oracle.derived, skip)
        report.compared = len(planned) - len(skip)
    return report


def release_specific_keys(cfg: RunConfig, pinned: bool) -> tuple[str, ...]:
    """Derived values whose rule changed between the miles-rl 0.0.2 wheel and the pinned v0.1.0,
    compared only when the oracle parsed with v0.1.0: v0.1.0 runs "shared Actor/Critic PPO" (the
    critic on the actor's GPUs); 0.0.2 added the critic's GPUs to a colocated rollout."""
    ppo = cfg.algorithm.advantage_estimator is AdvantageEstimator.ppo
    return () if pinned or not ppo else ("rollout_num_gpus",)


def compare(
    plan: dict[str, Any], derived: dict[str, Any], skip: tuple[str, ...] = ()
) -> dict[str, tuple[Any, Any]]:
    """Keys whose planned value differs from miles' derived one (floats compared exactly)."""
    return {
        k: (v, derived.get(k)) for k, v in plan.items() if k not in skip and derived.get(k) != v
    }


def check(run: Any) -> int:
    """mode=check entry (miles_hydra.launch.plan.run_check): print the report. 0 = passed, 1 = a flag
    problem, miles refused the command, or a derived value differs from the plan; 2 = the flag
    table passed but miles' parser is not available here, so derived values went unchecked."""
    report = check_with_oracle(run)
    print(report.render())
    if not report.ok:
        return 1
    return 2 if report.oracle is None else 0
