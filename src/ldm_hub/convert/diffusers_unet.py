"""diffusers' ``UNet2DConditionModel`` / ``UNet2DModel`` -> :class:`~ldm_hub.models.unet.LDMUNet`.

Two parts, as every converter here: a config translator (diffusers kwargs -> LDMUNet kwargs, rejecting what
LDMUNet cannot represent, naming the field) and a key table {diffusers key: our key} built by walking our
model's structure, handed to :func:`~ldm_hub.convert.common.convert_state_dict`, which checks every key and
shape.

Config facts encoded here (read from diffusers 0.42):

* ``UNet2DConditionModel``: ``attention_head_dim`` is the number of heads when ``num_attention_heads`` is None
  (diffusers issue #2011); the SpatialTransformer GroupNorm eps is fixed at 1e-6.
* ``UNet2DModel``: ``attention_head_dim`` is channels per head (None: one head); the attention GroupNorm
  uses ``norm_eps``; the mid-block attention has no GroupNorm at all when ``resnet_time_scale_shift`` is
  ``"scale_shift"`` and ``attn_norm_num_groups`` is None (rejected: CompVis always normalises).
* Down/upsampling per level: ``DownBlock2D``/``UpBlock2D`` always use convolutions, ``Resnet*sampleBlock2D``
  always ResBlocks, ``Attn*Block2D`` follow ``downsample_type``/``upsample_type``; LDMUNet has one
  ``resblock_updown`` switch, so all levels must agree.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import torch

from ..models.attention import SelfAttentionBlock, SpatialTransformer
from ..models.unet import Downsample, LDMUNet, ResBlock, Upsample
from .common import convert_state_dict

# ---------------------------------------------------------------------------------------------- config

# block type -> (has attention, how it resamples: "conv" | "resnet" | the model's *_type field)
_DOWN_BLOCKS = {
    "UNet2DConditionModel": {"CrossAttnDownBlock2D": (True, "conv"), "DownBlock2D": (False, "conv")},
    "UNet2DModel": {
        "AttnDownBlock2D": (True, "downsample_type"),
        "DownBlock2D": (False, "conv"),
        "ResnetDownsampleBlock2D": (False, "resnet"),
    },
}
_UP_BLOCKS = {
    "UNet2DConditionModel": {"CrossAttnUpBlock2D": (True, "conv"), "UpBlock2D": (False, "conv")},
    "UNet2DModel": {
        "AttnUpBlock2D": (True, "upsample_type"),
        "UpBlock2D": (False, "conv"),
        "ResnetUpsampleBlock2D": (False, "resnet"),
    },
}
_MID_BLOCKS = {"UNet2DConditionModel": "UNetMidBlock2DCrossAttn", "UNet2DModel": "UNetMidBlock2D"}

# Fields that must keep these values (diffusers' defaults that match the CompVis architecture).
_FIXED = {
    "center_input_sample": False,
    "act_fn": "silu",
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "time_embedding_type": "positional",
    "class_embed_type": None,
    # UNet2DConditionModel only
    "only_cross_attention": False,
    "mid_block_only_cross_attention": None,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "dual_cross_attention": False,
    "use_linear_projection": False,
    "addition_embed_type": None,
    "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0,
    "time_embedding_act_fn": None,
    "timestep_post_act": None,
    "time_cond_proj_dim": None,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "attention_type": "default",
    "class_embeddings_concat": False,
    "cross_attention_norm": None,
    "reverse_transformer_layers_per_block": None,
}
# SpatialTransformer's GroupNorm eps in diffusers' Transformer2DModel (and CompVis' Normalize).
_TRANSFORMER_NORM_EPS = 1e-6


def _diffusers_defaults(class_name: str) -> dict:
    import diffusers

    cls = getattr(diffusers, class_name)
    params = inspect.signature(cls.__init__).parameters
    return {k: p.default for k, p in params.items() if k != "self" and p.default is not inspect.Parameter.empty}


def _class_name(config: Mapping) -> str:
    name = config.get("_class_name")
    if name is None:  # a bare kwargs dict: cross-attention fields mean the conditional UNet
        types = list(config.get("down_block_types", ())) + list(config.get("up_block_types", ()))
        cond = "cross_attention_dim" in config or any("CrossAttn" in t for t in types)
        name = "UNet2DConditionModel" if cond else "UNet2DModel"
    if name not in _DOWN_BLOCKS:
        raise ValueError(f"_class_name: cannot convert a diffusers {name!r}; expected one of {sorted(_DOWN_BLOCKS)}")
    return name


def _uniform(value, field: str):
    """A per-block tuple whose entries LDMUNet needs equal -> the single value."""
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ValueError(f"{field}: per-block values {list(value)} are not supported by LDMUNet (one value only)")
        return value[0]
    return value


def _is_default(value, expected) -> bool:
    """``value`` equals ``expected``; an "off" default (False / None) also accepts any off value or all-off tuple."""
    if expected is False or expected is None:
        return not value or (isinstance(value, (list, tuple)) and not any(value))
    return value == expected


def _resample_kind(cfg: Mapping, resample: str) -> str:
    """ "conv" / "resnet" for a block, reading the model's downsample_type / upsample_type where it decides."""
    if resample.endswith("_type"):
        return cfg.get(resample) or "conv"  # diffusers: None means "conv"
    return resample


def convert_unet_config(diffusers_config: Mapping) -> dict:
    """Translate a diffusers ``UNet2DConditionModel`` or ``UNet2DModel`` config into :class:`LDMUNet` kwargs.

    Missing fields take diffusers' defaults for that class (read from its signature). Raises ``ValueError``
    naming the field for anything LDMUNet cannot represent.

    Example:
        >>> cfg = convert_unet_config({"_class_name": "UNet2DModel", "in_channels": 6, "out_channels": 3,
        ...     "block_out_channels": [160, 320, 320, 640], "attention_head_dim": 32,
        ...     "down_block_types": ["DownBlock2D"] * 3 + ["AttnDownBlock2D"],
        ...     "up_block_types": ["AttnUpBlock2D"] + ["UpBlock2D"] * 3})
        >>> cfg["attention_levels"], cfg["attention_head_dim"], cfg["cross_attention_dim"]
        ((False, False, False, True), 32, None)
    """
    name = _class_name(diffusers_config)
    cond = name == "UNet2DConditionModel"
    cfg = _diffusers_defaults(name)
    cfg.update({k: v for k, v in diffusers_config.items() if not k.startswith("_")})

    for field, expected in _FIXED.items():
        if field in cfg and not _is_default(cfg[field], expected):
            raise ValueError(f"{field}={cfg[field]!r} is not supported by LDMUNet (needs {expected!r})")

    # ---- levels: attention per level, resampling per level
    down_types, up_types = list(cfg["down_block_types"]), list(cfg["up_block_types"])
    num_levels = len(cfg["block_out_channels"])
    if len(down_types) != num_levels or len(up_types) != num_levels:
        raise ValueError(
            f"down_block_types / up_block_types must have one entry per block_out_channels level ({num_levels})"
        )
    attention_levels, resampling = [], set()
    for level, block in enumerate(down_types):
        if block not in _DOWN_BLOCKS[name]:
            raise ValueError(
                f"down_block_types[{level}]={block!r} is not supported for {name}: use {sorted(_DOWN_BLOCKS[name])}"
            )
        has_attention, resample = _DOWN_BLOCKS[name][block]
        attention_levels.append(has_attention)
        if level < num_levels - 1:
            resampling.add((f"down_block_types[{level}]", _resample_kind(cfg, resample)))
    for k, block in enumerate(up_types):
        level = num_levels - 1 - k
        if block not in _UP_BLOCKS[name]:
            raise ValueError(
                f"up_block_types[{k}]={block!r} is not supported for {name}: use {sorted(_UP_BLOCKS[name])}"
            )
        has_attention, resample = _UP_BLOCKS[name][block]
        if has_attention != attention_levels[level]:
            raise ValueError(
                f"up_block_types[{k}]={block!r} does not mirror down_block_types[{level}]={down_types[level]!r} "
                "(LDMUNet has attention per level on both paths)"
            )
        if level > 0:
            resampling.add((f"up_block_types[{k}]", _resample_kind(cfg, resample)))
    kinds = {kind for _, kind in resampling}
    if not kinds <= {"conv", "resnet"}:
        raise ValueError(f"downsample_type/upsample_type must be 'conv' or 'resnet', got {sorted(kinds)}")
    if len(kinds) > 1:
        raise ValueError(
            "down_block_types / up_block_types / downsample_type / upsample_type mix convolution and ResBlock "
            f"resampling across levels ({sorted(resampling)}); LDMUNet has one resblock_updown switch"
        )
    resblock_updown = kinds == {"resnet"}

    # ---- middle block
    mid_type = cfg.get("mid_block_type")
    if mid_type != _MID_BLOCKS[name]:
        raise ValueError(f"mid_block_type={mid_type!r} is not supported for {name} (needs {_MID_BLOCKS[name]!r})")
    mid_block_attention = bool(cfg.get("add_attention", True))

    # ---- attention heads and norms
    scale_shift = cfg["resnet_time_scale_shift"]
    if scale_shift not in ("default", "scale_shift"):
        raise ValueError(f"resnet_time_scale_shift={scale_shift!r} is not supported (use 'default' or 'scale_shift')")
    if cfg.get("norm_num_groups") is None:
        raise ValueError("norm_num_groups=None is not supported by LDMUNet")
    layers_per_block = _uniform(cfg["layers_per_block"], "layers_per_block")
    num_heads, head_dim, transformer_depth, cross_attention_dim = None, None, 1, None
    if cond:
        heads = cfg.get("num_attention_heads") or cfg["attention_head_dim"]  # issue #2011: head_dim means heads
        num_heads = tuple(heads) if isinstance(heads, (list, tuple)) else heads
        depth = cfg["transformer_layers_per_block"]
        if isinstance(depth, (list, tuple)) and any(isinstance(d, (list, tuple)) for d in depth):
            raise ValueError("transformer_layers_per_block: per-layer (nested) depths are not supported by LDMUNet")
        transformer_depth = tuple(depth) if isinstance(depth, (list, tuple)) else depth
        cross_attention_dim = _uniform(cfg["cross_attention_dim"], "cross_attention_dim")
        attention_norm_eps = _TRANSFORMER_NORM_EPS
    else:
        if cfg["attention_head_dim"] is None:  # diffusers then uses head dim = channels: one head
            num_heads = 1
        else:
            head_dim = cfg["attention_head_dim"]
        attn_groups = cfg.get("attn_norm_num_groups")
        if mid_block_attention and attn_groups is None and scale_shift != "default":
            raise ValueError(
                "attn_norm_num_groups=None with resnet_time_scale_shift='scale_shift' gives diffusers' mid-block "
                "attention no GroupNorm; LDMUNet always normalises (set attn_norm_num_groups=norm_num_groups)"
            )
        if mid_block_attention and attn_groups is not None and attn_groups != cfg["norm_num_groups"]:
            raise ValueError(
                f"attn_norm_num_groups={attn_groups} differs from norm_num_groups={cfg['norm_num_groups']}; "
                "(it sets the mid-block attention's GroupNorm only); LDMUNet uses one group count"
            )
        attention_norm_eps = cfg["norm_eps"]

    sample_size = cfg.get("sample_size")
    if isinstance(sample_size, list):
        sample_size = tuple(sample_size)
    return dict(
        in_channels=cfg["in_channels"],
        out_channels=cfg["out_channels"],
        sample_size=sample_size,
        block_out_channels=tuple(cfg["block_out_channels"]),
        layers_per_block=layers_per_block,
        attention_levels=tuple(attention_levels),
        mid_block_attention=mid_block_attention,
        num_attention_heads=num_heads,
        attention_head_dim=head_dim,
        transformer_depth=transformer_depth,
        cross_attention_dim=cross_attention_dim,
        flip_sin_to_cos=cfg["flip_sin_to_cos"],
        freq_shift=cfg["freq_shift"],
        time_embed_dim=cfg.get("time_embedding_dim"),
        resnet_time_scale_shift=scale_shift,
        resblock_updown=resblock_updown,
        num_class_embeds=cfg.get("num_class_embeds"),
        norm_num_groups=cfg["norm_num_groups"],
        norm_eps=cfg["norm_eps"],
        attention_norm_eps=attention_norm_eps,
        dropout=cfg.get("dropout", 0.0),
    )


# ------------------------------------------------------------------------------------------ key table

# our sub-module path -> diffusers sub-module path, per block type
_RESBLOCK = {
    "in_norm": "norm1",
    "in_conv": "conv1",
    "emb_proj": "time_emb_proj",
    "out_norm": "norm2",
    "out_conv": "conv2",
    "skip": "conv_shortcut",
}
_RESAMPLE_CONV = {"conv": "conv"}
_SELF_ATTENTION = {
    "norm": "group_norm",
    "attn.q_proj": "to_q",
    "attn.k_proj": "to_k",
    "attn.v_proj": "to_v",
    "attn.out_proj": "to_out.0",
}
_SPATIAL_TRANSFORMER = {"norm": "norm", "proj_in": "proj_in", "proj_out": "proj_out"}
# Our TransformerBlock parameter -> the diffusers / CompVis BasicTransformerBlock name (the two agree).
TRANSFORMER_BLOCK_KEYS = {
    "self_attn_norm": "norm1",
    "self_attn.q_proj": "attn1.to_q",
    "self_attn.k_proj": "attn1.to_k",
    "self_attn.v_proj": "attn1.to_v",
    "self_attn.out_proj": "attn1.to_out.0",
    "cross_attn_norm": "norm2",
    "cross_attn.q_proj": "attn2.to_q",
    "cross_attn.k_proj": "attn2.to_k",
    "cross_attn.v_proj": "attn2.to_v",
    "cross_attn.out_proj": "attn2.to_out.0",
    "ff_norm": "norm3",
    "ff.proj_in": "ff.net.0.proj",
    "ff.proj_out": "ff.net.2",
}
_TOP = {
    "conv_in": "conv_in",
    "time_embed.linear_in": "time_embedding.linear_1",
    "time_embed.linear_out": "time_embedding.linear_2",
    "class_embed": "class_embedding",
    "norm_out": "conv_norm_out",
    "conv_out": "conv_out",
}


def _table_for(module: torch.nn.Module) -> dict[str, str]:
    if isinstance(module, ResBlock):
        return _RESBLOCK
    if isinstance(module, (Downsample, Upsample)):
        return _RESAMPLE_CONV
    if isinstance(module, SelfAttentionBlock):
        return _SELF_ATTENTION
    if isinstance(module, SpatialTransformer):
        table = dict(_SPATIAL_TRANSFORMER)
        for k in range(len(module.blocks)):
            for ours, theirs in TRANSFORMER_BLOCK_KEYS.items():
                table[f"blocks.{k}.{ours}"] = f"transformer_blocks.{k}.{theirs}"
        return table
    raise TypeError(f"no diffusers key table for {type(module).__name__}")


def _map_params(ours_prefix: str, theirs_prefix: str, module: torch.nn.Module, table: Mapping[str, str]) -> dict:
    """{diffusers key: our key} for every parameter of ``module``, renaming its sub-module path via ``table``."""
    out = {}
    for name, _ in module.named_parameters():
        path, param = name.rsplit(".", 1)
        out[f"{theirs_prefix}{table[path]}.{param}"] = f"{ours_prefix}{path}.{param}"
    return out


def unet_key_map(model: LDMUNet) -> dict[str, str]:
    """The table {diffusers key: LDMUNet key}, walking ``model``'s levels the way diffusers lays out blocks."""
    key_map: dict[str, str] = {}

    def add(ours: str, theirs: str, module: torch.nn.Module) -> None:
        key_map.update(_map_params(ours + ".", theirs + ".", module, _table_for(module)))

    for name, _ in model.named_parameters():
        path, param = name.rsplit(".", 1)
        if path in _TOP:
            key_map[f"{_TOP[path]}.{param}"] = name

    num_levels = len(model.down_levels)
    for i, level in enumerate(model.down_levels):
        for j, resnet in enumerate(level.resnets):
            add(f"down_levels.{i}.resnets.{j}", f"down_blocks.{i}.resnets.{j}", resnet)
        for j, attention in enumerate(level.attentions):
            add(f"down_levels.{i}.attentions.{j}", f"down_blocks.{i}.attentions.{j}", attention)
        if level.downsample is not None:
            add(f"down_levels.{i}.downsample", f"down_blocks.{i}.downsamplers.0", level.downsample)

    add("mid.resnet_1", "mid_block.resnets.0", model.mid.resnet_1)
    if model.mid.attention is not None:
        add("mid.attention", "mid_block.attentions.0", model.mid.attention)
    add("mid.resnet_2", "mid_block.resnets.1", model.mid.resnet_2)

    for i, level in enumerate(model.up_levels):
        block = f"up_blocks.{num_levels - 1 - i}"  # diffusers numbers up blocks from the lowest resolution
        for j, resnet in enumerate(level.resnets):
            add(f"up_levels.{i}.resnets.{j}", f"{block}.resnets.{j}", resnet)
        for j, attention in enumerate(level.attentions):
            add(f"up_levels.{i}.attentions.{j}", f"{block}.attentions.{j}", attention)
        if level.upsample is not None:
            add(f"up_levels.{i}.upsample", f"{block}.upsamplers.0", level.upsample)
    return key_map


def convert_unet_state_dict(
    diffusers_state_dict: Mapping[str, torch.Tensor], model: LDMUNet
) -> dict[str, torch.Tensor]:
    """Rename a diffusers UNet state dict to ``model``'s keys; every key and shape is checked."""
    return convert_state_dict(
        diffusers_state_dict, unet_key_map(model), model, source_name="diffusers UNet state dict"
    )


def unet_from_diffusers(diffusers_config: Mapping, state_dict: Mapping[str, torch.Tensor]) -> LDMUNet:
    """Build an :class:`LDMUNet` from a diffusers UNet config and state dict (weights copied, not shared).

    Parameters are allocated without random initialisation; dtype and device follow ``state_dict``; the model
    is returned in eval mode.
    """
    with torch.device("meta"):
        model = LDMUNet(**convert_unet_config(diffusers_config))
    converted = convert_unet_state_dict(state_dict, model)
    model.load_state_dict({k: v.detach().clone() for k, v in converted.items()}, strict=True, assign=True)
    return model.eval()
