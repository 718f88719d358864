"""Recipe parity: our experiment presets compile to what miles v0.1.0's official launch scripts run.

For each recipe, the recorded `ray job submit` argv (tests/snapshots/launch_scripts/py/scripts/
<recipe>/execute.txt of the v0.1.0 snapshot) and our compiled argv are both read the way miles'
parser reads them (the v0.1.0 flag table: types, nargs, last value wins, an absent flag is its
default), after normalising paths (the miles checkout, trailing slashes) and run ids. Every flag
whose value differs must be listed below for that recipe with the reason; the test prints the
differing flags. The prepare command (HF -> torch_dist conversion) is compared the same way.
Pure compilation: no miles import, a few seconds.
"""

from __future__ import annotations

import ast
import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from support.combos import compose_run

from miles_hydra.backends.miles.check.flags import FlagSpec, load_table
from miles_hydra.backends.miles.compile import compile_miles
from miles_hydra.backends.miles.convert import CONVERTER, prepare_commands

# The golden recordings of the commands miles v0.1.0's launch scripts issue
# (tests/snapshots/launch_scripts/py/scripts/<recipe>/ of the release, commit 78527b9), kept here
# for the recipes below so that the parity check runs wherever the tests run.
RECORDED = Path(__file__).resolve().parent / "recipes"
RUN_ID = "260101-000000-000"  # the snapshot's frozen run id
RUN_DIR = "/root/shared_data/<RUN_ID>"  # where the recipes put a run's outputs
MILES_ROOT = "/root/miles"  # backend.miles_root: <REPO_ROOT> in the recordings

# Differences every recipe shares, on purpose (the reason is the value).
COMMON = {
    "--bf16": "we state it; miles sets bf16 = not fp16 on its own",
    "--use-tensorboard": "our metrics and alerts read the TensorBoard events (always on)",
    "--wandb-key": "secrets never go in argv: WANDB_API_KEY reaches the job's env only",
    "--wandb-group": "we group W&B runs by experiment name (the recipes: by run id)",
    "--wandb-mode": "we state W&B's mode (offline unless logging.wandb_mode=online)",
    "--dump-details": "per-sample debug dumps are opt-in (backend.extra_args)",
    "--eval-prompt-data": "our eval set is named 'eval' (metrics eval/...), the recipes' 'aime'",
    "--rollout-max-prompt-len": "we always cap prompt length (rollout.rollout_max_prompt_len)",
    "--eval-max-response-len": "our eval uses the rollout's response length",
    "--eval-temperature": "we state the eval temperature (same value miles falls back to)",
    "--num-steps-per-rollout": "we state the optimizer steps miles derives (batch / global)",
}

# recipe -> (our preset, {flag: reason} beyond COMMON that differ on purpose)
RECIPES: dict[str, tuple[str, dict[str, str]]] = {
    "run_qwen3_30b_a3b.py": ("recipe_qwen3_30b_a3b", {}),
    "run_qwen3_4b.py": ("recipe_qwen3_4b", {}),
    "run_qwen3_dense.py": ("recipe_qwen3_dense", {}),
    "amd/run_qwen3_4b.py": ("recipe_qwen3_4b_amd", {}),
    "amd/run_qwen3_30b_a3b.py": (
        "recipe_qwen3_30b_a3b_amd",
        {"--sequence-parallel": "Megatron turns SP off at TP=1; we refuse the no-op switch"},
    ),
    "run_qwen3_5_35b_a3b_mtp.py": ("recipe_qwen3_5_35b_a3b_mtp", {}),
    "run_glm45_355b_a32b_8node.py": (
        "recipe_glm45_355b_a32b_8node",
        {
            "--save": "we always checkpoint under the run dir (requeues resume); it saves nothing",
            "--load": "(with --save) resume from the run's own checkpoints",
            "--save-interval": "(with --save) Megatron requires it: the last rollout only",
            "--global-batch-size": "we state the global batch miles derives (128 x 8 / 4)",
            "--kl-loss-type": "both KL terms are off: we state the estimator only when one is on",
        },
    ),
}


def _moe_freq(text: str) -> Any:
    """Megatron's moe_freq_type: an int, or a list expression like "[0]*3+[1]*89"."""

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.List):
            return [ev(e) for e in node.elts]
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = ev(node.left), ev(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(text)

    return ev(ast.parse(text, mode="eval").body)


def _value(spec: FlagSpec, raw: str) -> Any:
    raw = raw.replace(RUN_ID, "<RUN_ID>").replace("<REPO_ROOT>", MILES_ROOT)
    if spec.type in ("int", "float"):
        return float(raw)
    if spec.type == "moe_freq_type":
        return _moe_freq(raw)
    return raw.rstrip("/") if raw.startswith("/") and len(raw) > 1 else raw


def effective(argv: list[str]) -> dict[str, tuple[str, Any]]:
    """dest -> (flag, value) as miles' parser would set it; only flags that appear."""
    table = load_table()
    out: dict[str, tuple[str, Any]] = {}
    i = 0
    while i < len(argv):
        flag = argv[i]
        spec = table[flag]  # KeyError = a flag v0.1.0 does not know
        j = i + 1
        while j < len(argv) and not (argv[j].startswith("--") and argv[j] in table):
            j += 1
        values = argv[i + 1 : j]
        if spec.action == "BooleanOptionalAction":
            value: Any = not flag.startswith("--no-")
        elif spec.action == "_StoreTrueAction" or spec.nargs == 0:
            value = spec.action != "_StoreFalseAction"
        elif spec.nargs in ("+", "*") or isinstance(spec.nargs, int):
            value = tuple(_value(spec, v) for v in values)
        else:
            assert len(values) == 1, (flag, values)
            value = _value(spec, values[0])
        out[spec.dest] = (flag, value)
        i = j
    return out


def _default(flag: str) -> Any:
    import json

    from miles_hydra.backends.miles.check.flags import DEFAULT_TABLE

    for action in json.loads(DEFAULT_TABLE.read_text())["actions"]:
        if flag in action["flags"]:
            default = action["default"]
            return (
                float(default)
                if isinstance(default, (int, float)) and not isinstance(default, bool)
                else default
            )
    raise KeyError(flag)


def argv_diff(ours: list[str], theirs: list[str]) -> dict[str, tuple[Any, Any]]:
    """flag -> (our value, the recipe's value) for every parsed value that differs."""
    a, b = effective(ours), effective(theirs)
    diff = {}
    for dest in sorted(set(a) | set(b)):
        flag = (a.get(dest) or b[dest])[0]
        if flag.startswith("--no-"):
            flag = "--" + flag[len("--no-") :]
        va = a[dest][1] if dest in a else _default(flag)
        vb = b[dest][1] if dest in b else _default(flag)
        if va != vb:
            diff[flag] = (va, vb)
    return diff


def recorded_commands(recipe: str, which: str) -> list[list[str]]:
    """Each recorded command of execute.txt/prepare.txt as tokens."""
    text = (RECORDED / recipe / which).read_text()
    blocks = re.split(r"^### \d+\n", text, flags=re.M)
    return [shlex.split(b.replace("\n", " ")) for b in blocks if b.strip()]


def recorded_train_argv(recipe: str) -> tuple[str, list[str]]:
    """(entry script, argv) of the recorded `ray job submit ... -- python3 <entry> argv`."""
    for tokens in recorded_commands(recipe, "execute.txt"):
        if "submit" in tokens and "--" in tokens:
            rest = tokens[tokens.index("--") + 1 :]
            assert rest[0] == "python3"
            return rest[1].replace("<REPO_ROOT>", MILES_ROOT), rest[2:]
    raise AssertionError(f"no ray job submit in {recipe}")


def recorded_conversion(recipe: str) -> list[str]:
    for tokens in recorded_commands(recipe, "prepare.txt"):
        if "torchrun" in tokens:
            return tokens[tokens.index("torchrun") :]
    raise AssertionError(f"no torchrun in {recipe}/prepare.txt")


@cache
def _compose(*overrides: str):
    return compose_run(list(overrides), base=False)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_compiled_argv_equals_the_recipe(recipe: str) -> None:
    preset, deliberate = RECIPES[recipe]
    cmd = compile_miles(_compose(f"experiment={preset}"), RUN_DIR)
    entry, theirs = recorded_train_argv(recipe)
    assert cmd.entry == entry
    diff = argv_diff(cmd.argv, theirs)
    allowed = {**COMMON, **deliberate}
    unexplained = {f: v for f, v in diff.items() if f not in allowed}
    report = "\n".join(
        f"  {f}: ours {v[0]!r} != recipe {v[1]!r}  [{allowed.get(f, 'UNEXPLAINED')}]"
        for f, v in sorted(diff.items())
    )
    print(f"\n{recipe} vs experiment={preset}: {len(diff)} differing flag(s)\n{report}")
    assert not unexplained, f"{recipe}: flags differ without a listed reason:\n{report}"
    stale = sorted(f for f in deliberate if f not in diff)
    assert not stale, f"{recipe}: listed as different but equal now: {stale}"


# Flags a recipe preset's backend.extra_args may re-set after our sections (argparse: last wins).
OVERRIDES_ALLOWED = {
    "recipe_qwen3_5_35b_a3b_mtp": {"--moe-token-dispatcher-type"},  # the recipe does it too
    "recipe_glm45_355b_a32b_8node": {"--moe-token-dispatcher-type"},  # the recipe does it too
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_extra_args_only_add_what_the_schema_lacks(recipe: str) -> None:
    """A preset's verbatim flags never silently replace a value our config compiles (the plan
    would show the wrong one)."""
    preset, _ = RECIPES[recipe]
    run = _compose(f"experiment={preset}")
    cmd = compile_miles(run, RUN_DIR)
    extra = run.backend.extra_args
    ours = effective(cmd.argv[: len(cmd.argv) - len(extra)])
    overridden = {flag for dest, (flag, _) in effective(list(extra)).items() if dest in ours}
    assert overridden <= OVERRIDES_ALLOWED.get(preset, set()), overridden


CONVERTED = [r for r in sorted(RECIPES) if (RECORDED / r / "prepare.txt").exists()]


@pytest.mark.parametrize("recipe", CONVERTED)
def test_conversion_command_equals_the_recipes_prepare_step(recipe: str) -> None:
    """The managed HF -> torch_dist step runs miles' converter exactly as the recipe's prepare
    step does; only the output directory differs (content-addressed, reused across runs)."""
    preset, _ = RECIPES[recipe]
    run = _compose(f"experiment={preset}", "model.convert=always")
    (step,) = prepare_commands(run, RUN_DIR)
    theirs = recorded_conversion(recipe)
    script = theirs.index(f"<REPO_ROOT>/{CONVERTER}")
    assert step.argv[: script + 1] == [*theirs[:script], f"{MILES_ROOT}/{CONVERTER}"]
    diff = argv_diff(step.argv[script + 1 :], theirs[script + 1 :])
    print(f"\n{recipe} prepare: {diff}")
    assert set(diff) == {"--save"}, diff
    assert diff["--save"] == (step.partial, run.model.torch_dist_checkpoint)
    assert step.creates.startswith(f"{run.model.hf_checkpoint}_torch_dist/{run.model.name}-")
    # the train command loads what the step creates
    argv = compile_miles(run, RUN_DIR).argv
    assert argv[argv.index("--ref-load") + 1] == step.creates
