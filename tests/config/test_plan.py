"""plan_data / render_plan / run_check on real composed configs."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field

import pytest
from conftest import compose_fast, materialize

from miles_hydra.config.backend import Device
from miles_hydra.launch import hardware
from miles_hydra.launch.hardware import Hardware, detect_hardware
from miles_hydra.launch.memory import GIB, estimate, expert_param_count
from miles_hydra.launch.plan import plan_data, render_plan, run_check

DONE_WHEN = [
    "model=qwen3_30b_a3b",
    "parallelism=tp4_ep8_2node",
    "precision=fp8",
    "precision.rollout_checkpoint=/root/models/Qwen3-30B-A3B-FP8",
    "speculative=eagle",  # Qwen3 checkpoints have no MTP layers for mtp_online (issue 14)
    "speculative.draft_model_path=/root/models/Qwen3-30B-A3B-EAGLE3",
    "algorithm=grpo",
]


def test_done_when_layout_and_batches() -> None:
    d = plan_data(materialize(compose_fast(DONE_WHEN)))
    assert (d["backend"], d["nodes"], d["training_gpus"], d["rollout_gpus"]) == ("miles", 2, 16, 16)
    assert (d["engines"], d["engine_tp"], d["dp"], d["colocate"]) == (2, 8, 4, True)
    # 8 x 4 = 32 x 1; per step 32 = 1 x 4 x 8
    assert (d["samples_per_rollout"], d["global_batch_size"], d["grad_accumulation"]) == (32, 32, 8)


def test_moe_memory_by_hand() -> None:
    """Qwen3-30B-A3B on TP4 EP8 ETP1, 16 GPUs: dense params / 4, experts / 8; bf16 weights;
    fp32 master + Adam over DP 4 (dense) and expert-DP 2 (experts)."""
    run = materialize(compose_fast(DONE_WHEN))
    experts = expert_param_count(run)
    assert experts == 48 * 128 * 3 * 2048 * 768
    dense = run.model.param_count() - experts
    mem = estimate(run)
    assert mem.weights_gb == pytest.approx((dense / 4 + experts / 8) * 2 / GIB)
    assert mem.optimizer_gb == pytest.approx((dense / 4 / 4 + experts / 8 / 2) * 12 / GIB)
    assert mem.rollout_weights_gb == pytest.approx((dense + experts) * 1 / 8 / GIB)  # fp8, TP 8
    assert mem.card_assumed and mem.card_gb == 80.0
    assert d_warnings(run) == []


def d_warnings(run) -> list[str]:
    return plan_data(run)["warnings"]


def test_dense_kv_bytes_per_token() -> None:
    run = materialize(compose_fast(["model=qwen3_4b", "parallelism=tp8", "precision=bf16"]))
    # 36 layers x (K and V) x 8 KV heads / engine TP 2 x head dim 128 x 2 bytes
    assert estimate(run).kv_bytes_per_token == 36 * 2 * 4 * 128 * 2


def test_warns_when_training_state_exceeds_card() -> None:
    run = materialize(compose_fast(["model=qwen3_8b", "precision=bf16"]))  # 8B on one GPU
    text = render_plan(run, with_command=False)
    assert "WARNING: training state" in text


def test_card_memory_from_cluster_when_given() -> None:
    run = materialize(compose_fast(["model=qwen3_8b", "precision=bf16", "cluster.gpu_mem_gb=141"]))
    mem = estimate(run)
    assert (mem.card_gb, mem.card_assumed) == (141.0, False)
    assert "assumed NVIDIA H100" not in render_plan(run, with_command=False)


def test_plan_starts_with_resolved_config() -> None:
    text = render_plan(materialize(compose_fast([])))
    assert text.startswith("# ---- resolved config ----\n")
    assert "num_layers: 2" in text and "# ---- plan ----" in text
    assert "command" not in text.split("# ---- plan ----")[1]  # backend=local compiles nothing


@dataclass
class _Cmd:
    entry: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def test_plan_shows_compiled_command_with_secrets_redacted_fake_compiler(monkeypatch) -> None:
    """A stand-in for miles_hydra.backends.miles.compile (owned by another helper): shape of the output."""
    fake = types.ModuleType("miles_hydra.backends.miles.compile")
    fake.compile_miles = lambda cfg: _Cmd(  # type: ignore[attr-defined]
        "train.py",
        ["--tensor-model-parallel-size", "4", "--prompt-data", "a b.jsonl"],
        {"WANDB_API_KEY": "s3cret", "NCCL_CUMEM_ENABLE": "0"},
    )
    monkeypatch.setitem(sys.modules, "miles_hydra.backends.miles.compile", fake)
    text = render_plan(materialize(compose_fast(DONE_WHEN)))
    assert "train.py --tensor-model-parallel-size 4 --prompt-data 'a b.jsonl'" in text
    assert "WANDB_API_KEY=<redacted>" in text and "s3cret" not in text
    assert "NCCL_CUMEM_ENABLE=0" in text


def test_plan_names_the_rollout_modes_only_when_on() -> None:
    on = [
        "algorithm=grpo_tis",
        "rollout.partial_rollout=true",
        "rollout.mask_offpolicy_in_partial_rollout=true",
        "rollout.over_sampling_batch_size=12",
        "rollout.dynamic_sampling=nonzero_std",
        "rollout.async_training=true",
    ]
    text = render_plan(materialize(compose_fast(on)), with_command=False)
    assert "sampling:  over-sampling 12 prompts per round (batch 8)" in text
    assert (
        "dynamic sampling nonzero_std (drop groups whose rewards all agree, <= 10 rounds)" in text
    )
    assert "partial rollout (unfinished samples pause and resume next rollout; older tokens" in text
    assert "one-step-off pipeline" in text
    assert "\nsampling:  " not in render_plan(materialize(compose_fast([])), with_command=False)


def test_run_check_local_is_zero(capsys) -> None:
    assert run_check(materialize(compose_fast([]))) == 0
    assert "nothing to check beyond validation" in capsys.readouterr().out


def test_run_check_miles_without_oracle_is_two(monkeypatch, capsys) -> None:
    monkeypatch.setitem(
        sys.modules, "miles_hydra.backends.miles.check.compare", None
    )  # import -> ImportError
    assert run_check(materialize(compose_fast(DONE_WHEN))) == 2
    assert "miles_hydra.backends.miles.check.compare" in capsys.readouterr().err


MILES_OK = [
    *DONE_WHEN,
    "data=jsonl",
    "data.prompt_data=/data/prompts.jsonl",
    "reward=math",
    "rollout.eval_interval=null",
]


@pytest.mark.oracle
def test_run_check_miles_with_oracle(capsys) -> None:
    """The real miles parser (oracle venv) accepts the compiled Done-when command."""
    oracle = pytest.importorskip("miles_hydra.backends.miles.check.oracle")
    if oracle.oracle_python() is None:
        pytest.skip(f"no miles oracle venv; {oracle.SETUP_HINT}")
    assert run_check(materialize(compose_fast(MILES_OK))) == 0, capsys.readouterr().err
    assert "derived values match the plan" in capsys.readouterr().out


def test_uneven_pipeline_stages_and_memory_of_the_largest_stage() -> None:
    """Qwen3-235B (94 layers) on PP 4: first stage 22, last 24, the middle two share 48; the
    memory estimate follows the largest stage (24 of the 94 layers)."""
    base = ["model=qwen3_235b_a22b", "precision=bf16", "parallelism=disagg_tp4_pp4_ep8_8node"]
    run = materialize(
        compose_fast(
            [
                *base,
                "parallelism.decoder_first_pipeline_num_layers=22",
                "parallelism.decoder_last_pipeline_num_layers=24",
            ]
        )
    )
    d = plan_data(run)
    assert d["pp_stage_layers"] == [22, 24, 24, 24]
    assert "pipeline:  decoder layers per stage [22, 24, 24, 24]" in render_plan(run, False)
    even = materialize(compose_fast([*base, "model.num_layers=96"]))  # 24 per stage, even
    assert plan_data(even)["pp_stage_layers"] == [24] * 4
    # weights per GPU = the largest stage's share of the layers x the PP=1 figure
    pp1 = materialize(compose_fast([*base, "parallelism.pipeline_model_parallel_size=1"]))
    ratio = estimate(run).weights_gb / estimate(pp1).weights_gb
    assert ratio == pytest.approx(24 / 94)


def test_advises_single_gpu_for_one_sample_micro_batches_on_cuda() -> None:
    run = materialize(compose_fast(["backend.device=cuda"]))  # parallelism=single: mbs 1
    assert any("parallelism=single_gpu" in w for w in d_warnings(run))
    assert "WARNING: backend.device=cuda trains one sample" in render_plan(run)
    for fix in (["parallelism=single_gpu"], ["parallelism.micro_batch_size=8"], []):
        device = ["backend.device=cuda"] if fix else []
        assert d_warnings(materialize(compose_fast([*device, *fix]))) == []


def test_cpu_plan_speaks_of_the_cpu_and_one_micro_batch() -> None:
    """A local run on the CPU: no GPUs, no assumed H100, one micro-batch per global batch (the
    local trainer's split on the CPU), no card warnings."""
    run = materialize(compose_fast(["backend.device=cpu"]))
    hw = detect_hardware(run)
    assert hw == Hardware(Device.cpu, "CPU", None, "backend.device=cpu")
    d = plan_data(run, hw)
    assert (d["device"], d["micro_batch_size"], d["grad_accumulation"]) == ("cpu", 32, 1)
    plan = render_plan(run, hardware=hw).split("# ---- plan ----")[1]
    assert "device:    CPU (backend.device=cpu)" in plan
    assert "32 samples in one micro-batch" in plan
    for gpu_talk in ("GPUs", "H100", "per GPU", "grad-accumulation", "KV budget"):
        assert gpu_talk not in plan
    big = materialize(
        compose_fast(["model=qwen3_8b", "precision=bf16", "backend=local", "backend.device=cpu"])
    )
    assert "WARNING: training state" not in render_plan(big, hardware=detect_hardware(big))


def test_auto_device_without_a_gpu_driver_is_the_cpu(monkeypatch) -> None:
    monkeypatch.setattr(hardware, "_GPU_DRIVER_PATHS", ("/nonexistent/driver",))
    hw = detect_hardware(materialize(compose_fast([])))
    assert hw is not None and hw.is_cpu and "no CUDA device visible" in hw.note


def test_gpu_plan_names_the_detected_card_fake_gpu() -> None:
    """A detected GPU (stand-in: no GPU here): its name and memory instead of the assumed H100;
    the micro-batches as the trainer splits them on a GPU."""
    run = materialize(compose_fast(["parallelism=single_gpu"]))
    hw = Hardware(Device.cuda, "NVIDIA H200", 139.8, "backend.device=auto")
    plan = render_plan(run, hardware=hw).split("# ---- plan ----")[1]
    assert "device:    NVIDIA H200, 139.8 GiB (backend.device=auto" in plan
    assert "card 140 GiB (NVIDIA H200, detected)" in plan and "H100" not in plan
    assert "dynamic micro-batches of <= 16384 tokens per GPU" in plan
    mbs = materialize(compose_fast(["parallelism.micro_batch_size=8"]))
    assert plan_data(mbs, hw)["grad_accumulation"] == 4  # 32 = 8 x DP 1 x 4


def test_cluster_and_miles_runs_keep_the_cluster_view() -> None:
    for overrides in (["cluster=slurm"], ["model=qwen3_4b", "parallelism=tp8", "precision=bf16"]):
        run = materialize(compose_fast(overrides))
        assert detect_hardware(run) is None
        assert render_plan(run, with_command=False) == render_plan(
            run, with_command=False, hardware=detect_hardware(run)
        )
