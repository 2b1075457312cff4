"""diffusers ``AutoencoderKL`` / ``VQModel`` (config.json + weights) → ldm_hub's ``AutoencoderKL`` / ``VQModel``.

Config: diffusers spells attention per level as block *types* (``AttnDownEncoderBlock2D`` vs
``DownEncoderBlock2D``, decoder types listed coarsest first); ours is one ``attention_levels`` tuple indexed by
resolution, shared by E and D. Fields we cannot represent raise a ValueError naming the field.

Weights: one key table for both models, built by walking the config, then the shared loop
:func:`ldm_hub.convert.common.convert_state_dict`. diffusers' ``decoder.up_blocks.j`` runs j-th, i.e. it is the
level at resolution H/2^(L-1-j); ours is indexed by resolution, so ``up_blocks.j`` → ``up.{L-1-j}``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch

from ..models.autoencoder_blocks import resolve_attention_levels
from ..models.autoencoder_kl import AutoencoderKL
from ..models.autoencoder_vq import VQModel
from .common import convert_state_dict

DOWN_TYPES = {"DownEncoderBlock2D": False, "AttnDownEncoderBlock2D": True}  # block type → has attention
UP_TYPES = {"UpDecoderBlock2D": False, "AttnUpDecoderBlock2D": True}
# diffusers hard-codes these in its Encoder/Decoder/VectorQuantizer; they are config fields for us.
DIFFUSERS_NORM_EPS = 1e-6
DIFFUSERS_COMMITMENT_BETA = 0.25
SUPPORTED_ACTIVATIONS = ("silu", "swish")

# diffusers field → our field, copied as is.
_COPIED = {
    "in_channels": "in_channels",
    "out_channels": "out_channels",
    "layers_per_block": "layers_per_block",
    "latent_channels": "latent_channels",
    "norm_num_groups": "norm_num_groups",
    "scaling_factor": "scaling_factor",
    "sample_size": "sample_size",
    "mid_block_add_attention": "mid_block_attention",
}
# diffusers fields that must hold this value for us to represent the model.
_REQUIRED = {
    "shift_factor": None,
    "latents_mean": None,
    "latents_std": None,
    "use_quant_conv": True,
    "use_post_quant_conv": True,
    "norm_type": "group",
    "lookup_from_codebook": False,
}
# diffusers fields with no effect on the computation (dtype policy).
_IGNORED = ("force_upcast",)


def _diffusers_defaults(class_name: str) -> dict[str, Any]:
    """What diffusers' own class assumes for a field missing from config.json (its ``__init__`` defaults)."""
    import diffusers

    signature = inspect.signature(getattr(diffusers, class_name).__init__)
    return {n: p.default for n, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}


def _translate(diffusers_config: Mapping[str, Any], class_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Shared part of both translators: returns (our config, the diffusers config with defaults filled in)."""
    defaults = _diffusers_defaults(class_name)
    given = {k: v for k, v in diffusers_config.items() if not k.startswith("_")}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"diffusers {class_name} config: unknown field(s) {unknown}")
    cfg = {**defaults, **given}

    for field, required in _REQUIRED.items():
        if field in cfg and cfg[field] != required:
            raise ValueError(
                f"diffusers {class_name} config: {field}={cfg[field]!r} is not supported (only {required!r})"
            )
    if str(cfg["act_fn"]).lower() not in SUPPORTED_ACTIVATIONS:
        raise ValueError(f"diffusers {class_name} config: act_fn={cfg['act_fn']!r} is not supported (only 'silu')")

    num_levels = len(cfg["block_out_channels"])
    down, up = list(cfg["down_block_types"]), list(cfg["up_block_types"])
    for field, types, allowed in (("down_block_types", down, DOWN_TYPES), ("up_block_types", up, UP_TYPES)):
        bad = [t for t in types if t not in allowed]
        if bad:
            raise ValueError(f"diffusers {class_name} config: {field} contains {bad}; supported: {sorted(allowed)}")
        if len(types) != num_levels:
            raise ValueError(
                f"diffusers {class_name} config: {field} has {len(types)} entries but block_out_channels has "
                f"{num_levels}"
            )
    encoder_attention = tuple(DOWN_TYPES[t] for t in down)
    decoder_attention = tuple(UP_TYPES[t] for t in reversed(up))  # up_block_types run coarsest first
    if encoder_attention != decoder_attention:
        raise ValueError(
            f"diffusers {class_name} config: up_block_types {up} do not mirror down_block_types {down}; "
            "attention_levels must be the same in the encoder and the decoder"
        )

    ours = {ours_name: cfg[theirs] for theirs, ours_name in _COPIED.items()}
    ours["block_out_channels"] = tuple(cfg["block_out_channels"])
    ours["norm_eps"] = DIFFUSERS_NORM_EPS
    ours["attention_levels"] = encoder_attention if any(encoder_attention) else None
    return ours, cfg


def convert_autoencoder_kl_config(diffusers_config: Mapping[str, Any]) -> dict[str, Any]:
    """Translate a diffusers ``AutoencoderKL`` config.json (dict) to our :class:`AutoencoderKL`'s kwargs.

    Example:
        >>> ours = convert_autoencoder_kl_config({"block_out_channels": [64, 128], "layers_per_block": 2,
        ...     "down_block_types": ["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
        ...     "up_block_types": ["AttnUpDecoderBlock2D", "UpDecoderBlock2D"]})
        >>> ours["block_out_channels"], ours["attention_levels"]
        ((64, 128), (False, True))
    """
    ours, _ = _translate(diffusers_config, "AutoencoderKL")
    return ours


def convert_vq_model_config(diffusers_config: Mapping[str, Any]) -> dict[str, Any]:
    """Translate a diffusers ``VQModel`` config.json (dict) to our :class:`VQModel`'s kwargs.

    ``scaling_factor`` is kept as diffusers reads it (its VQModel default is 0.18215 when the file has none; the
    released VQ LDMs want 1.0, which a caller may set on the returned dict).
    """
    ours, cfg = _translate(diffusers_config, "VQModel")
    ours["num_vq_embeddings"] = cfg["num_vq_embeddings"]
    ours["vq_embed_dim"] = cfg["vq_embed_dim"]
    ours["commitment_beta"] = DIFFUSERS_COMMITMENT_BETA
    return ours


def _linear_weight(tensor: torch.Tensor) -> torch.Tensor:
    """A 1×1 conv kernel (out, in, 1, 1) as a Linear weight (out, in); Linear weights pass through."""
    return tensor.flatten(1) if tensor.ndim == 4 else tensor


def autoencoder_key_map(config: Mapping[str, Any], *, legacy_attention_names: bool = False) -> dict[str, str]:
    """{diffusers key: our key} for an AutoencoderKL or VQModel with our ``config``.

    ``legacy_attention_names`` reads attention weights under diffusers' pre-0.14 names
    (``query``/``key``/``value``/``proj_attn``) that old Hub files (e.g. CompVis/ldm-*) still use.
    """
    channels = list(config["block_out_channels"])
    num_levels = len(channels)
    blocks = config["layers_per_block"]
    attention = resolve_attention_levels(config.get("attention_levels"), num_levels)
    mid_attention = config["mid_block_attention"]
    attention_names = (
        {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out"}
        if legacy_attention_names
        else {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out.0": "to_out"}
    )
    key_map: dict[str, str] = {}

    def params(src: str, dst: str) -> None:
        key_map[f"{src}.weight"] = f"{dst}.weight"
        key_map[f"{src}.bias"] = f"{dst}.bias"

    def resnet(src: str, dst: str, in_channels: int, out_channels: int) -> None:
        for name in ("norm1", "conv1", "norm2", "conv2"):
            params(f"{src}.{name}", f"{dst}.{name}")
        if in_channels != out_channels:
            params(f"{src}.conv_shortcut", f"{dst}.shortcut")

    def attn(src: str, dst: str) -> None:
        params(f"{src}.group_norm", f"{dst}.norm")
        for theirs, ours in attention_names.items():
            params(f"{src}.{theirs}", f"{dst}.{ours}")

    def mid(src: str, dst: str) -> None:
        resnet(f"{src}.resnets.0", f"{dst}.block_1", channels[-1], channels[-1])
        if mid_attention:
            attn(f"{src}.attentions.0", f"{dst}.attn")
        resnet(f"{src}.resnets.1", f"{dst}.block_2", channels[-1], channels[-1])

    # E: levels in the same order in both libraries.
    params("encoder.conv_in", "encoder.conv_in")
    for i in range(num_levels):
        src, dst = f"encoder.down_blocks.{i}", f"encoder.down.{i}"
        for j in range(blocks):
            in_channels = channels[max(i - 1, 0)] if j == 0 else channels[i]
            resnet(f"{src}.resnets.{j}", f"{dst}.resnets.{j}", in_channels, channels[i])
            if attention[i]:
                attn(f"{src}.attentions.{j}", f"{dst}.attentions.{j}")
        if i < num_levels - 1:
            params(f"{src}.downsamplers.0.conv", f"{dst}.resample.conv")
    mid("encoder.mid_block", "encoder.mid")
    params("encoder.conv_norm_out", "encoder.norm_out")
    params("encoder.conv_out", "encoder.conv_out")

    # D: diffusers' up_blocks.j (j-th to run) is our level L-1-j.
    params("decoder.conv_in", "decoder.conv_in")
    mid("decoder.mid_block", "decoder.mid")
    for j in range(num_levels):
        i = num_levels - 1 - j
        src, dst = f"decoder.up_blocks.{j}", f"decoder.up.{i}"
        for k in range(blocks + 1):
            in_channels = channels[min(i + 1, num_levels - 1)] if k == 0 else channels[i]
            resnet(f"{src}.resnets.{k}", f"{dst}.resnets.{k}", in_channels, channels[i])
            if attention[i]:
                attn(f"{src}.attentions.{k}", f"{dst}.attentions.{k}")
        if i > 0:
            params(f"{src}.upsamplers.0.conv", f"{dst}.resample.conv")
    params("decoder.conv_norm_out", "decoder.norm_out")
    params("decoder.conv_out", "decoder.conv_out")

    params("quant_conv", "quant_conv")
    params("post_quant_conv", "post_quant_conv")
    if "num_vq_embeddings" in config:
        key_map["quantize.embedding.weight"] = "quantize.embedding.weight"
    return key_map


def convert_autoencoder_state_dict(
    diffusers_state_dict: Mapping[str, torch.Tensor], model: AutoencoderKL | VQModel
) -> dict[str, torch.Tensor]:
    """Rename a diffusers AutoencoderKL / VQModel state dict to ``model``'s keys, checking every key and shape.

    Raises :class:`~ldm_hub.convert.common.ConversionError` naming the first missing, unexpected or
    mis-shaped key.
    """
    legacy = any(k.endswith(".query.weight") for k in diffusers_state_dict)
    key_map = autoencoder_key_map(model.config, legacy_attention_names=legacy)
    linear_weights = ("to_q.weight", "to_k.weight", "to_v.weight", "to_out.weight")
    transforms = {ours: _linear_weight for ours in key_map.values() if ours.endswith(linear_weights)}
    return convert_state_dict(
        diffusers_state_dict,
        key_map,
        model,
        source_name=f"diffusers {type(model).__name__}",
        transforms=transforms,
    )


def _from_diffusers(cls, translate, config: Mapping[str, Any], state_dict, overrides: dict[str, Any]):
    model = cls(**{**translate(config), **overrides})
    model.load_state_dict(convert_autoencoder_state_dict(state_dict, model), strict=True)
    return model.eval()


def autoencoder_kl_from_diffusers(
    config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], **overrides: Any
) -> AutoencoderKL:
    """Build our :class:`AutoencoderKL` from a diffusers config dict and state dict (fp32, eval mode).

    ``overrides`` replace translated config fields, e.g. ``scaling_factor=...``.

    Example:
        >>> import diffusers
        >>> theirs = diffusers.AutoencoderKL(block_out_channels=(32, 64), norm_num_groups=8,
        ...     down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
        >>> ours = autoencoder_kl_from_diffusers(theirs.config, theirs.state_dict())
    """
    return _from_diffusers(AutoencoderKL, convert_autoencoder_kl_config, config, state_dict, overrides)


def vq_model_from_diffusers(
    config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], **overrides: Any
) -> VQModel:
    """Build our :class:`VQModel` from a diffusers config dict and state dict (fp32, eval mode).

    Example:
        >>> import diffusers
        >>> theirs = diffusers.VQModel(block_out_channels=(32, 64), norm_num_groups=8, num_vq_embeddings=16,
        ...     down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
        >>> ours = vq_model_from_diffusers(theirs.config, theirs.state_dict(), scaling_factor=1.0)
    """
    return _from_diffusers(VQModel, convert_vq_model_config, config, state_dict, overrides)
