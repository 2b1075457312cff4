"""diffusers' ``LDMBertModel`` (the ``bert/`` folder of CompVis/ldm-text2im-large-256) → ldm_hub's LDMBertModel.

The config is a transformers ``LDMBertConfig`` (BART-style names: ``d_model``, ``encoder_layers``, ...); the
weights live under ``model.`` plus an unused ``to_logits`` LM head, which is dropped on purpose.

Example:
    >>> from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig
    >>> from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertModel as TheirBert
    >>> theirs = TheirBert(LDMBertConfig(d_model=32, encoder_layers=1, encoder_attention_heads=2, head_dim=16,
    ...                                  encoder_ffn_dim=64, vocab_size=100))
    >>> ours = ldm_bert_from_diffusers(theirs.config.to_dict(), theirs.state_dict())
    >>> ours.config.hidden_size
    32
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ldm_hub.conditioning.text import LDMBertModel
from ldm_hub.convert.common import convert_state_dict

# Every LDMBertConfig field that shapes the network, with LDMBertConfig's defaults (used when config.json
# omits a field). Dropouts, init_std, layerdrop, use_cache and scale_embedding (never read by diffusers'
# LDMBertEncoder) do not change inference and are not carried over.
LDMBERT_CONFIG_DEFAULTS: dict[str, Any] = {
    "vocab_size": 30522,
    "max_position_embeddings": 77,
    "encoder_layers": 32,
    "encoder_ffn_dim": 5120,
    "encoder_attention_heads": 8,
    "head_dim": 64,
    "activation_function": "gelu",
    "d_model": 1280,
    "pad_token_id": 0,
}

# transformers' PretrainedConfig.attribute_map of LDMBertConfig: alias -> real field.
LDMBERT_CONFIG_ALIASES: dict[str, str] = {"hidden_size": "d_model", "num_attention_heads": "encoder_attention_heads"}

# diffusers builds every LayerNorm as nn.LayerNorm(d_model), i.e. with torch's default epsilon.
DIFFUSERS_LAYER_NORM_EPS: float = torch.nn.LayerNorm(1).eps

# transformers ACT2FN name -> ldm_hub activation_fn.
ACTIVATION_NAMES: dict[str, str] = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}

# Per-layer weights: diffusers name (under ``layers.{i}.``) -> ldm_hub name (under ``layers.{i}.``).
LAYER_KEYS: dict[str, str] = {
    "self_attn_layer_norm.weight": "attn_norm.weight",
    "self_attn_layer_norm.bias": "attn_norm.bias",
    "self_attn.q_proj.weight": "attn.q_proj.weight",
    "self_attn.k_proj.weight": "attn.k_proj.weight",
    "self_attn.v_proj.weight": "attn.v_proj.weight",
    "self_attn.out_proj.weight": "attn.out_proj.weight",
    "self_attn.out_proj.bias": "attn.out_proj.bias",
    "final_layer_norm.weight": "ff_norm.weight",
    "final_layer_norm.bias": "ff_norm.bias",
    "fc1.weight": "ff_in.weight",
    "fc1.bias": "ff_in.bias",
    "fc2.weight": "ff_out.weight",
    "fc2.bias": "ff_out.bias",
}

# Weights outside the layers: diffusers name (under the encoder prefix) -> ldm_hub name.
ENCODER_KEYS: dict[str, str] = {
    "embed_tokens.weight": "token_embedding.weight",
    "embed_positions.weight": "position_embedding.weight",
    "layer_norm.weight": "final_norm.weight",
    "layer_norm.bias": "final_norm.bias",
}

ENCODER_PREFIX = "model."  # LDMBertModel wraps the LDMBertEncoder as ``self.model``
UNUSED_KEYS = ("to_logits.weight", "to_logits.bias")  # LM head: never called by LDMBertModel.forward


def convert_ldm_bert_config(diffusers_config: Mapping[str, Any]) -> dict[str, Any]:
    """Translate a diffusers/transformers ``LDMBertConfig`` dict (config.json) into LDMBertModel kwargs."""
    if hasattr(diffusers_config, "to_dict"):
        diffusers_config = diffusers_config.to_dict()
    model_type = diffusers_config.get("model_type", "ldmbert")
    if model_type != "ldmbert":
        raise ValueError(f"expected an LDMBertConfig (model_type 'ldmbert'), got model_type={model_type!r}")
    cfg = dict(LDMBERT_CONFIG_DEFAULTS)
    for alias, field in LDMBERT_CONFIG_ALIASES.items():
        if alias in diffusers_config and field not in diffusers_config:
            cfg[field] = diffusers_config[alias]
    cfg.update({k: v for k, v in diffusers_config.items() if k in LDMBERT_CONFIG_DEFAULTS})
    activation = cfg["activation_function"]
    if activation not in ACTIVATION_NAMES:
        raise ValueError(
            f"activation_function={activation!r} has no ldm_hub equivalent; supported: {sorted(ACTIVATION_NAMES)}"
        )
    return {
        "vocab_size": cfg["vocab_size"],
        "max_position_embeddings": cfg["max_position_embeddings"],
        "hidden_size": cfg["d_model"],
        "num_hidden_layers": cfg["encoder_layers"],
        "num_attention_heads": cfg["encoder_attention_heads"],
        "attention_head_dim": cfg["head_dim"],
        "intermediate_size": cfg["encoder_ffn_dim"],
        "activation_fn": ACTIVATION_NAMES[activation],
        "layer_norm_eps": DIFFUSERS_LAYER_NORM_EPS,
        "pad_token_id": cfg["pad_token_id"],
    }


def ldm_bert_key_map(num_hidden_layers: int, prefix: str = ENCODER_PREFIX) -> dict[str, str]:
    """{diffusers key: ldm_hub key} for an LDMBert with ``num_hidden_layers`` blocks."""
    key_map = {prefix + theirs: ours for theirs, ours in ENCODER_KEYS.items()}
    for i in range(num_hidden_layers):
        key_map.update({f"{prefix}layers.{i}.{theirs}": f"layers.{i}.{ours}" for theirs, ours in LAYER_KEYS.items()})
    return key_map


def _is_unused(key: str) -> bool:
    # the LM head, and position_ids buffers that some transformers versions saved
    return key in UNUSED_KEYS or key.endswith("position_ids")


def convert_ldm_bert_state_dict(
    diffusers_state_dict: Mapping[str, torch.Tensor], model: LDMBertModel
) -> dict[str, torch.Tensor]:
    """Rename a diffusers LDMBertModel state dict (with or without the ``model.`` prefix) to ``model``'s keys.

    Raises :class:`ldm_hub.convert.common.ConversionError` naming the key on any missing, unexpected or
    misshaped tensor. ``to_logits`` (the unused LM head) is dropped.
    """
    if isinstance(diffusers_state_dict, torch.nn.Module):
        diffusers_state_dict = diffusers_state_dict.state_dict()
    has_prefix = any(k.startswith(ENCODER_PREFIX) for k in diffusers_state_dict)
    key_map = ldm_bert_key_map(model.config.num_hidden_layers, ENCODER_PREFIX if has_prefix else "")
    return convert_state_dict(
        diffusers_state_dict, key_map, model, source_name="diffusers LDMBertModel", ignore=_is_unused
    )


def ldm_bert_from_diffusers(config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> LDMBertModel:
    """Build an LDMBertModel from a diffusers ``bert/`` config dict and state dict (in eval mode)."""
    model = LDMBertModel(**convert_ldm_bert_config(config))
    model.load_state_dict(convert_ldm_bert_state_dict(state_dict, model), strict=True)
    return model.eval()
