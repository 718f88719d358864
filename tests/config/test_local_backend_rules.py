"""backend=local refuses the settings it cannot honour (issue 13), naming the key and the fix.

The local engine drafts a greedy chain with its MTP head, so SGLang's draft knobs
(``speculative.algorithm``, ``eagle_topk``, ``num_draft_tokens``) are refused there instead of
being silently ignored; backend=miles passes the same values on. Decode switches are typed
``backend.rollout_*`` fields, not environment variables.
"""

from __future__ import annotations

import pytest
from conftest import compose_fast, materialize

from miles_hydra.config.backend import BackendConfig
from miles_hydra.errors import ConfigError

MTP = ["speculative=mtp_online"]
MILES = ["model=mimo_7b", "precision=bf16", "speculative=mtp_online"]  # MiMo ships MTP layers

# (id, overrides, the key ConfigError.key must be, text the message must contain)
REFUSED_BY_LOCAL: list[tuple[str, list[str], str, str]] = [
    (
        "tree_drafts",
        [*MTP, "speculative.eagle_topk=4", "speculative.num_draft_tokens=8"],
        "speculative.eagle_topk",
        "backend=local drafts a chain: eagle_topk must be 1",
    ),
    (
        "other_algorithm",
        [*MTP, "speculative.algorithm=NEXTN"],
        "speculative.algorithm",
        "backend=miles",
    ),
    (
        "explicit_num_draft_tokens",
        [*MTP, "speculative.num_steps=3", "speculative.num_draft_tokens=4"],
        "speculative.num_draft_tokens",
        "num_steps + 1 = 4",
    ),
]


@pytest.mark.parametrize(
    "overrides, key, text", [c[1:] for c in REFUSED_BY_LOCAL], ids=[c[0] for c in REFUSED_BY_LOCAL]
)
def test_local_refuses_draft_knobs_it_ignores(overrides: list[str], key: str, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        materialize(compose_fast(overrides))
    assert info.value.key == key
    assert text in str(info.value)
    assert info.value.fix, "the message must say how to fix it"


@pytest.mark.parametrize(
    "overrides", [c[1] for c in REFUSED_BY_LOCAL], ids=[c[0] for c in REFUSED_BY_LOCAL]
)
def test_miles_takes_the_same_draft_knobs(overrides: list[str]) -> None:
    knobs = [o for o in overrides if o not in MTP]
    cfg = materialize(compose_fast([*MILES, *knobs, "backend=miles"]))
    assert cfg.speculative.enabled


def test_local_ignores_draft_knobs_only_when_speculation_is_off() -> None:
    cfg = materialize(compose_fast(["speculative.eagle_topk=4", "speculative.algorithm=NEXTN"]))
    assert not cfg.speculative.enabled


def test_local_takes_the_defaults() -> None:
    cfg = materialize(compose_fast([*MTP, "speculative.num_steps=3"]))
    assert cfg.speculative.draft_tokens == 4


def test_decode_switches_are_typed_backend_fields() -> None:
    cfg = materialize(
        compose_fast(
            [
                "backend.rollout_batched=false",
                "backend.rollout_cuda_graphs=false",
                "backend.rollout_compile=true",
                "backend.rollout_attn_kernel=false",
            ]
        )
    )
    b = cfg.backend
    assert (b.rollout_batched, b.rollout_cuda_graphs, b.rollout_compile) == (False, False, True)
    assert b.rollout_attn_kernel is False
    default = BackendConfig()
    assert default.rollout_batched is None  # on CUDA only
    assert (default.rollout_cuda_graphs, default.rollout_compile) == (True, False)
    assert default.rollout_attn_kernel is True


def test_decode_switches_reject_non_booleans() -> None:
    with pytest.raises(Exception, match="rollout_compile"):
        compose_fast(["backend.rollout_compile=sometimes"])
