"""The CompVis checkpoint layout as key tables {CompVis key: our key}, built by walking our models.

The prefixes of a LatentDiffusion ``state_dict``, the UNet table (``openaimodel.UNetModel``'s block numbering,
:func:`unet_key_map`) with the legacy fused ``qkv`` split (:func:`split_fused_qkv`), the autoencoder table
(:func:`autoencoder_key_map`), the EMA names (:func:`ema_key`) and the 1×1 convolutions that are Linear weights
here (:func:`linear_transforms`). Part of :mod:`ldm_hub.convert.compvis`, which re-exports every public name;
imports models only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from ..models.attention import SelfAttentionBlock, SpatialTransformer
from ..models.autoencoder_kl import AutoencoderKL
from ..models.autoencoder_vq import VQModel
from ..models.unet import Downsample, LDMUNet, ResBlock, Upsample
from .common import ConversionError
from .diffusers_unet import TRANSFORMER_BLOCK_KEYS

# ------------------------------------------------------------------------------------------- checkpoint layout

# Top-level buffers of a LatentDiffusion checkpoint that carry no weights of ours: the DDPM schedule (the
# scheduler is rebuilt from ``betas``), training-only state, and the tables a DDIM sampler leaves behind
# (the released inpainting_big checkpoint has them).
SCHEDULE_BUFFERS = frozenset({
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
    "lvlb_weights", "logvar", "cond_ids",
    "ddim_sigmas", "ddim_alphas", "ddim_alphas_prev", "ddim_sqrt_one_minus_alphas",
})  # fmt: skip
EMA_BOOKKEEPING = ("model_ema.decay", "model_ema.num_updates")

UNET_PREFIX = "model.diffusion_model."
EMA_PREFIX = "model_ema."
FIRST_STAGE_PREFIX = "first_stage_model."
COND_STAGE_PREFIX = "cond_stage_model."


def ema_key(key: str) -> str:
    """The ``model_ema`` name of a UNet key: ``model.diffusion_model.a.b`` → ``model_ema.diffusion_modelab``
    (LitEma strips the dots; a fused-part suffix ``:q`` is kept)."""
    key, _, part = key.partition(":")
    name = EMA_PREFIX + key[len("model.") :].replace(".", "")
    return f"{name}:{part}" if part else name


# ------------------------------------------------------------------------------------------- key tables

# our sub-module path → CompVis sub-module path
_RESBLOCK = {
    "in_norm": "in_layers.0",
    "in_conv": "in_layers.2",
    "emb_proj": "emb_layers.1",
    "out_norm": "out_layers.0",
    "out_conv": "out_layers.3",
    "skip": "skip_connection",
}
_DOWNSAMPLE = {"conv": "op"}
_UPSAMPLE = {"conv": "conv"}
_SPATIAL_TRANSFORMER = {"norm": "norm", "proj_in": "proj_in", "proj_out": "proj_out"}
# (the BasicTransformerBlock table is diffusers_unet.TRANSFORMER_BLOCK_KEYS: CompVis and diffusers name it alike)
# legacy AttentionBlock: q/k/v come out of one fused ``qkv`` (split by :func:`split_fused_qkv`)
_ATTENTION_BLOCK = {
    "norm": "norm",
    "attn.q_proj": "qkv:q",
    "attn.k_proj": "qkv:k",
    "attn.v_proj": "qkv:v",
    "attn.out_proj": "proj_out",
}
_UNET_TOP = {
    "conv_in": "input_blocks.0.0",
    "time_embed.linear_in": "time_embed.0",
    "time_embed.linear_out": "time_embed.2",
    "class_embed": "label_emb",
    "norm_out": "out.0",
    "conv_out": "out.2",
}
_QKV_PARTS = "qkv"


def _table_for(module: torch.nn.Module) -> dict[str, str]:
    if isinstance(module, ResBlock):
        return _RESBLOCK
    if isinstance(module, Downsample):
        return _DOWNSAMPLE
    if isinstance(module, Upsample):
        return _UPSAMPLE
    if isinstance(module, SelfAttentionBlock):
        return _ATTENTION_BLOCK
    if isinstance(module, SpatialTransformer):
        table = dict(_SPATIAL_TRANSFORMER)
        for k in range(len(module.blocks)):
            table.update({f"blocks.{k}.{ours}": f"transformer_blocks.{k}.{theirs}"
                          for ours, theirs in TRANSFORMER_BLOCK_KEYS.items()})  # fmt: skip
        return table
    raise TypeError(f"no CompVis key table for {type(module).__name__}")


def _compvis_key(prefix: str, path: str, param: str) -> str:
    """``prefix + path + "." + param``; a fused part ``qkv:q`` becomes ``qkv.<param>:q``."""
    if ":" in path:
        path, part = path.split(":")
        return f"{prefix}{path}.{param}:{part}"
    return f"{prefix}{path}.{param}"


def unet_key_map(model: LDMUNet, prefix: str = UNET_PREFIX) -> dict[str, str]:
    """The table {CompVis key: LDMUNet key}, walking ``model`` in ``openaimodel.UNetModel``'s block order.

    CompVis numbers the encoder blocks ``input_blocks.1 …`` (``.0`` the ResBlock or resampler, ``.1`` its
    attention) after ``input_blocks.0.0 = conv_in``, and the decoder blocks ``output_blocks.0 …`` from the
    lowest resolution, the upsampler following the last block of a level at ``.1`` or (after an attention)
    ``.2``. Fused AttentionBlock q/k/v appear as ``<...>.qkv.weight:q`` (see :func:`split_fused_qkv`).
    """
    key_map: dict[str, str] = {}

    def add(ours: str, theirs: str, module: torch.nn.Module) -> None:
        table = _table_for(module)
        for name, _ in module.named_parameters():
            path, param = name.rsplit(".", 1)
            key_map[_compvis_key(f"{prefix}{theirs}.", table[path], param)] = f"{ours}.{path}.{param}"

    for name, _ in model.named_parameters():
        path, param = name.rsplit(".", 1)
        if path in _UNET_TOP:
            key_map[f"{prefix}{_UNET_TOP[path]}.{param}"] = name

    block = 1
    for i, level in enumerate(model.down_levels):
        for j, resnet in enumerate(level.resnets):
            add(f"down_levels.{i}.resnets.{j}", f"input_blocks.{block}.0", resnet)
            if len(level.attentions):
                add(f"down_levels.{i}.attentions.{j}", f"input_blocks.{block}.1", level.attentions[j])
            block += 1
        if level.downsample is not None:
            add(f"down_levels.{i}.downsample", f"input_blocks.{block}.0", level.downsample)
            block += 1

    add("mid.resnet_1", "middle_block.0", model.mid.resnet_1)
    add("mid.attention", "middle_block.1", model.mid.attention)
    add("mid.resnet_2", "middle_block.2", model.mid.resnet_2)

    block = 0
    for i in reversed(range(len(model.up_levels))):
        level = model.up_levels[i]
        for j, resnet in enumerate(level.resnets):
            add(f"up_levels.{i}.resnets.{j}", f"output_blocks.{block}.0", resnet)
            if len(level.attentions):
                add(f"up_levels.{i}.attentions.{j}", f"output_blocks.{block}.1", level.attentions[j])
            if j == len(level.resnets) - 1 and level.upsample is not None:
                slot = 2 if len(level.attentions) else 1
                add(f"up_levels.{i}.upsample", f"output_blocks.{block}.{slot}", level.upsample)
            block += 1
    return key_map


def split_fused_qkv(
    state_dict: Mapping[str, torch.Tensor], key_map: Mapping[str, str], model: LDMUNet, *, new_order: bool = False
) -> dict[str, torch.Tensor]:
    """Split every fused AttentionBlock ``qkv`` (Conv1d, 3C output channels) into ``qkv.<param>:q|k|v``.

    The legacy order (CompVis ``QKVAttentionLegacy``) interleaves per head, [q_h, k_h, v_h] for h = 1 … H;
    ``new_order`` (``use_new_attention_order``, ``QKVAttention``) stacks [q, k, v], each head-major. Our
    attention splits heads head-major too, so each part is a plain reshape. Other keys pass through.
    """
    heads = {}
    modules = dict(model.named_modules())
    for source, target in key_map.items():
        if ":" in source:
            fused = source.split(":")[0]
            heads[fused] = modules[target.rsplit(".", 2)[0]].heads  # "...attn.q_proj.weight" → "...attn"
    out = {k: v for k, v in state_dict.items() if k not in heads}
    for fused, n_heads in heads.items():
        if fused not in state_dict:
            continue  # reported by convert_state_dict as the missing "<fused>:q"
        tensor = state_dict[fused]
        if tensor.shape[0] % (3 * n_heads):
            raise ConversionError(
                f"{fused}: {tuple(tensor.shape)} has {tensor.shape[0]} channels, not 3 × {n_heads} heads × head_dim"
            )
        head_dim = tensor.shape[0] // (3 * n_heads)
        rest = tuple(tensor.shape[1:])
        if new_order:
            parts = tensor.reshape(3, n_heads, head_dim, *rest)  # (3, H, d, ...)
        else:
            parts = tensor.reshape(n_heads, 3, head_dim, *rest).transpose(0, 1)  # (3, H, d, ...)
        for index, part in enumerate(_QKV_PARTS):
            out[f"{fused}:{part}"] = parts[index].reshape(n_heads * head_dim, *rest).clone()  # (C, ...)
    return out


_AUTOENCODER_SEGMENTS = {
    "resnets": "block",
    "attentions": "attn",
    "shortcut": "nin_shortcut",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out": "proj_out",
}


def _compvis_autoencoder_name(ours: str) -> str:
    """Our autoencoder key → CompVis's: a rename per path segment (``resample`` → ``downsample`` in E,
    ``upsample`` in D; the middle ``attn`` → ``attn_1``); levels are indexed by resolution in both."""
    parts = ours.split(".")
    renamed = []
    for i, part in enumerate(parts):
        if part == "resample":
            part = "downsample" if parts[0] == "encoder" else "upsample"
        elif part == "attn" and i and parts[i - 1] == "mid":
            part = "attn_1"
        else:
            part = _AUTOENCODER_SEGMENTS.get(part, part)
        renamed.append(part)
    return ".".join(renamed)


def autoencoder_key_map(model: AutoencoderKL | VQModel, prefix: str = "") -> dict[str, str]:
    """The table {CompVis key: our key} for an AutoencoderKL or VQModel (``prefix`` e.g. ``first_stage_model.``)."""
    return {prefix + _compvis_autoencoder_name(name): name for name in model.state_dict()}


# CompVis keys of 1×1 convolutions that are Linear layers in our models: the legacy AttentionBlock's qkv parts
# and proj_out (Conv1d), the autoencoder attention's q, k, v and proj_out (Conv2d).
_CONV_AS_LINEAR = re.compile(r"\.(qkv\.weight:[qkv]|proj_out\.weight|[qkv]\.weight)$")


def _conv_to_linear(tensor: torch.Tensor) -> torch.Tensor:
    """A 1×1 (or width-1 1-D) convolution kernel as a Linear weight (out, in)."""
    return tensor.flatten(1) if tensor.ndim > 2 else tensor


def linear_transforms(key_map: Mapping[str, str], model: torch.nn.Module) -> dict:
    """{our key: squeeze} for the CompVis convolution kernels that are Linear weights here."""
    params = dict(model.named_parameters())
    return {ours: _conv_to_linear for theirs, ours in key_map.items()
            if _CONV_AS_LINEAR.search(theirs) and params[ours].ndim == 2}  # fmt: skip
