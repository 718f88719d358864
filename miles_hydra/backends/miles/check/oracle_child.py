"""miles' own parser on CPU: runs INSIDE the oracle venv (or a miles image), never imported by us.

    python oracle_child.py parse JOBS.json RESULTS.json   # JOBS: [{"id": str, "argv": [str]}]
    python oracle_child.py dump OUT.json                  # every argparse action of train.py

Standalone on purpose (stdlib + miles only): the oracle venv has no miles_hydra, hydra or
omegaconf. One process parses many argvs, amortizing the ~7 s import of miles/Megatron/SGLang.

For each argv it makes the files miles opens while parsing, in a fresh temporary directory:
an HF ``config.json`` that matches the Megatron model flags (``--hf-checkpoint``), an empty
``--ref-load`` dir and ``--load`` dir (no checkpoint: miles then loads ``--ref-load``),
one-line ``--prompt-data`` / ``--eval-prompt-data`` files, and the YAML behind an inline
``--custom-config-path base64:...`` (newer miles decodes these itself; 0.0.2 only opens files).
Derived values that are one of these temporary paths are mapped back to the original argument.
CPU caveats (../shared/reference/probes.md section 7): torchvision is stubbed, Megatron's
device-arch query and torch's compute capability are patched to Hopper (9, for
TP/CP > 1 and --moe-grouped-gemm), CUDA_DEVICE_MAX_CONNECTIONS=1.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import sys
import tempfile
import time
import traceback
from typing import Any

# Values miles/Megatron derive that our plan predicts, plus the switches we set.
DERIVED_KEYS = (
    "world_size",
    "data_parallel_size",
    "global_batch_size",
    "micro_batch_size",
    "num_steps_per_rollout",
    "rollout_batch_size",
    "n_samples_per_prompt",
    "num_rollout",
    "partial_rollout",
    "mask_offpolicy_in_partial_rollout",
    "over_sampling_batch_size",
    "dynamic_sampling_filter_path",
    "max_weight_staleness",
    "rollout_num_gpus",
    "rollout_num_gpus_per_engine",
    "sglang_tp_size",
    "colocate",
    "offload_train",
    "offload_rollout",
    "tensor_model_parallel_size",
    "pipeline_model_parallel_size",
    "decoder_first_pipeline_num_layers",
    "decoder_last_pipeline_num_layers",
    "context_parallel_size",
    "expert_model_parallel_size",
    "expert_tensor_parallel_size",
    "sequence_parallel",
    "eps_clip",
    "eps_clip_high",
    "advantage_estimator",
    "use_critic",
    "use_kl_loss",
    "kl_loss_coef",
    "kl_coef",
    "use_tis",
    "tis_clip",
    "tis_clip_low",
    "custom_tis_function_path",
    "use_rollout_logprobs",
    "use_routing_replay",
    "use_rollout_routing_replay",
    "mtp_num_layers",
    "enable_mtp_training",
    "mtp_loss_scaling_factor",
    "sglang_speculative_algorithm",
    "sglang_speculative_num_steps",
    "sglang_speculative_eagle_topk",
    "sglang_speculative_num_draft_tokens",
    "bf16",
    "fp16",
    "fp8",
    "fp8_recipe",
    "transformer_impl",
    "use_distributed_optimizer",
    "seq_length",
    "padded_vocab_size",
    "load",
    "ref_load",
    "save",
    "save_interval",
    "lr",
    "optimizer",
    "use_dynamic_batch_size",
    "max_tokens_per_gpu",
    "calculate_per_token_loss",
    "use_wandb",
    "use_tensorboard",
    "use_mlflow",
    "wandb_mode",
    "use_tensorboard",
    "use_mlflow",
    "eval_interval",
)
PATH_FLAGS = ("--hf-checkpoint", "--ref-load", "--load", "--prompt-data", "--custom-config-path")


def bootstrap() -> None:
    """Make miles importable on a CPU box without torchvision or a CUDA driver."""
    os.environ.setdefault("CUDA_DEVICE_MAX_CONNECTIONS", "1")
    try:
        import torchvision  # noqa: F401
    except ImportError:
        _install_torchvision_stub()
        if os.environ.get("ORACLE_TORCHVISION_AVAILABLE") == "1":
            _report_torchvision_available()


def _report_torchvision_available() -> None:
    """v0.1.0's SGLang registers image processors at import, which transformers 5.12 refuses
    without torchvision: let transformers see the stub (nothing here processes images)."""
    from transformers.utils import import_utils

    import_utils.is_torchvision_available = lambda: True
    import_utils.is_torchvision_v2_available = lambda: True
    message = import_utils.BACKENDS_MAPPING["torchvision"][1]
    import_utils.BACKENDS_MAPPING["torchvision"] = (lambda: True, message)


def _install_torchvision_stub() -> None:
    import importlib.abc
    import importlib.machinery
    from unittest import mock

    from transformers.utils import import_utils

    import_utils.is_torchvision_available()  # cache False before the stub exists (lru_cache)

    class _Stub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201
            if name == "torchvision" or name.startswith("torchvision."):
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):  # noqa: ANN001, ANN201
            module = mock.MagicMock(name=spec.name)
            module.__path__, module.__spec__, module.__name__ = [], spec, spec.name
            module.__version__ = "0.0.0+stub"
            return module

        def exec_module(self, module):  # noqa: ANN001, ANN201
            return None

    sys.meta_path.insert(0, _Stub())


def _patch_device_arch() -> None:
    import megatron.training.arguments as megatron_arguments
    import torch

    arch = int(os.environ.get("ORACLE_GPU_ARCH", "9"))
    megatron_arguments.get_device_arch_version = lambda: arch
    # --moe-grouped-gemm asks torch.cuda for the compute capability (needs >= 8).
    torch.cuda.get_device_capability = lambda device=None: (arch, 0)


def _flag_value(argv: list[str], flag: str, default: Any = None) -> Any:
    if flag in argv:
        i = argv.index(flag)
        if i + 1 < len(argv):
            return argv[i + 1]
    return default


def hf_config_for(argv: list[str]) -> dict[str, Any]:
    """An HF config.json whose fields equal the Megatron model flags hf_validate_args checks."""
    hidden = int(_flag_value(argv, "--hidden-size", 64))
    heads = int(_flag_value(argv, "--num-attention-heads", 4))
    moe = "--num-experts" in argv
    mla = "--multi-latent-attention" in argv
    model_type = "deepseek_v3" if mla else ("qwen3_moe" if moe else "qwen3")
    theta = int(_flag_value(argv, "--rotary-base", 10000))
    config: dict[str, Any] = {
        "model_type": model_type,
        "architectures": ["Qwen3ForCausalLM"],
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_key_value_heads": int(_flag_value(argv, "--num-query-groups", heads)),
        "num_hidden_layers": int(_flag_value(argv, "--num-layers", 2)),
        "intermediate_size": int(_flag_value(argv, "--ffn-hidden-size", 4 * hidden)),
        "tie_word_embeddings": "--untie-embeddings-and-output-weights" not in argv,
        "rms_norm_eps": float(_flag_value(argv, "--norm-epsilon", 1e-5)),
        "rope_theta": theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": theta},
        "vocab_size": int(_flag_value(argv, "--vocab-size", 1024)),
    }
    if moe:
        config["num_experts"] = config["n_routed_experts"] = int(_flag_value(argv, "--num-experts"))
        config["moe_intermediate_size"] = int(_flag_value(argv, "--moe-ffn-hidden-size", hidden))
    return config


def materialize(argv: list[str], root: str) -> tuple[list[str], dict[str, str]]:
    """Rewrite path arguments to files/dirs under `root`; return (argv, {tmp path: original})."""
    argv = list(argv)
    back: dict[str, str] = {}

    def swap(i: int, new: str) -> None:
        back[new] = argv[i]
        argv[i] = new

    for i, token in enumerate(argv[:-1]):
        if token not in PATH_FLAGS and token != "--eval-prompt-data":
            continue
        target = os.path.join(root, token.lstrip("-"))
        if token == "--hf-checkpoint":
            os.makedirs(target, exist_ok=True)
            with open(os.path.join(target, "config.json"), "w") as f:
                json.dump(hf_config_for(argv), f)
            swap(i + 1, target)
        elif token in ("--ref-load", "--load"):
            os.makedirs(target, exist_ok=True)
            swap(i + 1, target)
        elif token == "--prompt-data":
            _write_prompts(argv, target + ".jsonl")
            swap(i + 1, target + ".jsonl")
        elif token == "--custom-config-path" and argv[i + 1].startswith("base64:"):
            with open(target + ".yaml", "wb") as f:
                f.write(base64.b64decode(argv[i + 1][len("base64:") :], validate=True))
            swap(i + 1, target + ".yaml")
        elif token == "--eval-prompt-data":
            k = i + 1  # name path [name path ...]
            while k + 1 < len(argv) and not argv[k].startswith("--"):
                path = os.path.join(root, f"eval_{k}.jsonl")
                _write_prompts(argv, path)
                swap(k + 1, path)
                k += 2
    return argv, back


def _write_prompts(argv: list[str], path: str) -> None:
    record = {
        _flag_value(argv, "--input-key", "input"): "1+1=",
        _flag_value(argv, "--label-key", "label"): "2",
    }
    with open(path, "w") as f:
        f.write(json.dumps(record) + "\n")


def parse_one(argv: list[str], parse_args: Any) -> dict[str, Any]:
    """Run miles' parse_args on one argv; never raises."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="miles_oracle_") as root:
        real_argv, back = materialize(argv, root)
        out, err = io.StringIO(), io.StringIO()
        result: dict[str, Any] = {"ok": False, "derived": {}, "error": ""}
        try:
            sys.argv = ["train.py", *real_argv]
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                args = parse_args()
            result["ok"] = True
            result["derived"] = _derived(args, back, argv)
        except SystemExit as exc:  # argparse: unknown flag, bad type/choice (exit 2)
            result["error"] = (err.getvalue().strip().splitlines() or [f"exit {exc.code}"])[-1]
        except BaseException as exc:  # noqa: BLE001 - validation failures of any kind
            tail = traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:]
            result["error"] = "".join(tail).strip()
        for tmp, original in back.items():
            result["error"] = result["error"].replace(tmp, original)
    result["seconds"] = round(time.monotonic() - start, 3)
    return result


def _derived(args: argparse.Namespace, back: dict[str, str], argv: list[str]) -> dict[str, Any]:
    keys = list(DERIVED_KEYS)
    custom = _flag_value(argv, "--custom-config-path")
    if custom and custom.startswith("base64:"):
        import yaml

        keys += list(yaml.safe_load(base64.b64decode(custom[len("base64:") :])) or {})
    derived = {}
    for key in keys:
        value = getattr(args, key, None)
        if isinstance(value, str) and value in back:
            value = back[value]
        derived[key] = (
            value if isinstance(value, (bool, int, float, str, type(None))) else str(value)
        )
    return derived


def dump_actions(out_path: str) -> None:
    """Write every argparse action of miles' train.py parser as JSON (the flag table)."""
    captured: dict[str, argparse.ArgumentParser] = {}
    original = argparse.ArgumentParser.parse_args

    class _Captured(Exception):
        pass

    def capture(self, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        if self.description == "Megatron-LM Arguments":
            captured["parser"] = self
            raise _Captured
        return original(self, *a, **kw)

    from miles.utils.arguments import parse_args

    argparse.ArgumentParser.parse_args = capture
    sys.argv = ["train.py", "--rollout-batch-size", "1"]  # miles' pre-parser requires it
    try:
        parse_args()
    except _Captured:
        pass
    finally:
        argparse.ArgumentParser.parse_args = original
    actions = [_action_record(a) for a in captured["parser"]._actions]
    meta = {"miles_rl_version": _miles_version(), "python": sys.version.split()[0]}
    meta.update(_versions())
    with open(out_path, "w") as f:
        json.dump({"meta": meta, "actions": actions}, f, indent=1, sort_keys=True)
        f.write("\n")


def _action_record(action: argparse.Action) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        import enum

        if isinstance(value, enum.Enum):  # argparse converted the string to this member
            return value.name
        if isinstance(value, (bool, int, float, str, type(None))):
            return value
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return str(value)

    kind = type(action).__name__
    choices = action.choices
    if isinstance(choices, (set, frozenset, dict)):  # unordered: sort so dumps are reproducible
        choices = sorted(choices, key=str)
    return {
        "flags": list(action.option_strings),
        "dest": action.dest,
        "type": getattr(action.type, "__name__", None if action.type is None else str(action.type)),
        "choices": None if choices is None else [plain(c) for c in choices],
        "nargs": action.nargs,
        "action": kind,
        "default": plain(action.default),
        "required": action.required,
    }


def _versions() -> dict[str, str]:
    """Where miles came from and the SGLang/transformers whose flags the table holds."""
    from importlib import metadata

    import miles

    root = os.path.dirname(os.path.dirname(os.path.realpath(miles.__file__)))
    out = {"miles_source": os.path.basename(root)}  # miles-v0.1.0 or site-packages (the wheel)
    for dist in ("sglang", "transformers"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "vendored"
    return out


def _miles_version() -> str:
    from importlib import metadata

    if os.environ.get("ORACLE_MILES_RELEASE"):  # a source overlay (oracle.py sets it)
        return os.environ["ORACLE_MILES_RELEASE"]
    try:
        return metadata.version("miles-rl")
    except metadata.PackageNotFoundError:
        return "source"


def main() -> int:
    command, *paths = sys.argv[1:]  # parse_one overwrites sys.argv: read ours first
    bootstrap()
    if command == "dump":
        dump_actions(paths[0])
        return 0
    assert command == "parse" and len(paths) == 2, sys.argv
    jobs_path, results_path = paths
    with open(jobs_path) as f:
        jobs = json.load(f)
    t0 = time.monotonic()
    from miles.utils.arguments import parse_args

    _patch_device_arch()
    import_s = round(time.monotonic() - t0, 3)
    results = []
    for job in jobs:
        results.append({"id": job["id"], **parse_one(job["argv"], parse_args)})
    with open(results_path, "w") as f:
        json.dump({"import_seconds": import_s, "results": results}, f, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
