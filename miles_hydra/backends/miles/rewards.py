"""Our reward functions inside miles, through miles' custom RM hook (``--custom-rm-path``).

miles calls ``await fn(args, sample)`` for each sample (``miles.rollout.rm_hub.async_rm``), with
``sample.prompt`` (text, chat template applied if configured), ``sample.response`` (decoded
text) and ``sample.label`` (the record's label field). Both functions go through the same
wrapper as the local engine (``miles_hydra.tasks.reward.checked``): an exception or a value
that is not a finite number raises RewardError naming the function, prompt and response.

- ``task_reward`` (reward=task): the label is the envelope ``miles_hydra.backends.miles.dataset`` wrote,
  ``{"task", "task_kwargs", "label"}``; the synthetic task's own verifier scores the response.
- ``custom_reward`` (reward=custom): calls your ``module:function(prompt, response, label)``,
  named by ``miles_hydra_custom_rm_path`` in the inline ``--custom-config-path`` YAML (miles sets
  it on ``args``). On a synthetic task the function gets the inner label, as on backend=local,
  so one function works on both backends. It is called synchronously: keep it cheap.
"""

from __future__ import annotations

import functools
import json
from types import SimpleNamespace
from typing import Any, Optional

from miles_hydra.errors import ConfigError, RewardError
from miles_hydra.tasks.reward import RewardFn, build_reward_fn, checked, load_custom_reward
from miles_hydra.tasks.source import Prompt

CUSTOM_RM_KEY = "miles_hydra_custom_rm_path"  # args attribute: the user's module:function
ENVELOPE_KEYS = frozenset({"task", "task_kwargs", "label"})


def parse_task_label(raw: Any) -> Optional[dict[str, Any]]:
    """The envelope {"task", "task_kwargs", "label"} in `raw` (JSON text or dict), else None."""
    value = raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except ValueError:
            return None
    if isinstance(value, dict) and set(value) == ENVELOPE_KEYS:
        return value
    return None


async def task_reward(args: Any, sample: Any) -> float:  # noqa: ARG001 - miles' signature
    """reward=task: the synthetic task's verifier on the response (1.0 exact answer, else 0.0)."""
    envelope = parse_task_label(sample.label)
    if envelope is None:
        raise RewardError(
            f"reward=task needs a synthetic task's label {{task, task_kwargs, label}}, got "
            f"{sample.label!r}; backend=miles writes them to <run_dir>/data (data=arithmetic, "
            "countdown or sorting)"
        )
    kwargs = json.dumps(envelope["task_kwargs"], sort_keys=True)
    fn = _task_reward_fn(str(envelope["task"]), kwargs)
    return fn(_prompt(sample, envelope["label"]), _response(sample))


async def custom_reward(args: Any, sample: Any) -> float:
    """reward=custom: your ``function(prompt, response, label)``, the inner label unwrapped."""
    path = getattr(args, CUSTOM_RM_KEY, None)
    if not path:
        raise ConfigError(
            "reward.custom_rm_path",
            None,
            f"did not reach miles (args.{CUSTOM_RM_KEY} is unset)",
            "pass the compiled --custom-config-path along with --custom-rm-path",
        )
    envelope = parse_task_label(sample.label)
    label = envelope["label"] if envelope is not None else sample.label
    return _custom_reward_fn(str(path))(_prompt(sample, label), _response(sample))


@functools.lru_cache(maxsize=32)
def _task_reward_fn(task: str, task_kwargs_json: str) -> RewardFn:
    """The task's verifier, wrapped like the local engine's (built once per task and knobs);
    the namespaces stand in for the reward and data config sections build_reward_fn reads."""
    data = SimpleNamespace(source="synthetic", task=task, task_kwargs=json.loads(task_kwargs_json))
    return build_reward_fn(SimpleNamespace(rm_type="task", custom_rm_path=None), data)


@functools.lru_cache(maxsize=8)
def _custom_reward_fn(path: str) -> RewardFn:
    return checked(path, load_custom_reward(path))


def _prompt(sample: Any, label: Any) -> Prompt:
    text = sample.prompt if isinstance(sample.prompt, str) else json.dumps(sample.prompt)
    return Prompt(text=text, ids=[], label=label, meta={"source": "miles"})


def _response(sample: Any) -> str:
    return sample.response if isinstance(sample.response, str) else str(sample.response or "")
