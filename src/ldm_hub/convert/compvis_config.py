"""An original CompVis YAML → ldm_hub constructor arguments: the facts the CompVis code hard-codes, reading the
YAML (``yaml.safe_load``), and one translator per section — ``unet_config`` (``openaimodel.UNetModel``),
``autoencoder_config`` (the first stage), ``scheduler_from_original`` (the DDPM schedule as our DDIM sampler).

A ValueError names any field we cannot represent. Part of :mod:`ldm_hub.convert.compvis`, which re-exports every
public name here; imports models and schedulers only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..loading import ModelFileError
from ..models.autoencoder_kl import AutoencoderKL
from ..models.autoencoder_vq import VQModel
from ..schedulers.common import make_betas
from ..schedulers.ddim import DDIMScheduler
from .common import ConversionError

# ------------------------------------------------------------------------------------------- facts

# The CompVis code hard-codes these (ldm.modules.diffusionmodules.util.normalization, model.Normalize,
# attention.Normalize, openaimodel.AttentionBlock).
COMPVIS_NORM_GROUPS = 32
UNET_NORM_EPS = 1e-5  # GroupNorm32 of ResBlocks, the output norm and the legacy AttentionBlock
TRANSFORMER_NORM_EPS = 1e-6  # SpatialTransformer's Normalize
AUTOENCODER_NORM_EPS = 1e-6  # Encoder/Decoder's Normalize
VQ_COMMITMENT_BETA = 0.25  # ldm.models.autoencoder.VQModel builds VectorQuantizer2(..., beta=0.25)

# LatentDiffusion / DDPM defaults for fields a YAML may leave out.
LDM_DEFAULTS = {
    "timesteps": 1000,
    "beta_schedule": "linear",
    "linear_start": 1e-4,
    "linear_end": 2e-2,
    "parameterization": "eps",
    "scale_factor": 1.0,
    "scale_by_std": False,
}
# CompVis β schedule names → ours ("linear" in CompVis is linear in √β).
BETA_SCHEDULES = {"linear": "scaled_linear", "sqrt_linear": "linear", "cosine": "squaredcos_cap_v2"}
PREDICTION_TYPES = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}
# A checkpoint's schedule matches the YAML's when its betas agree this closely (float64 vs float32 maths).
BETAS_RTOL = 1e-5

KL_TARGETS = ("AutoencoderKL",)
VQ_TARGETS = ("VQModel", "VQModelInterface")
LDM_TARGETS = ("LatentDiffusion", "Layout2ImgDiffusion")
FIRST_STAGE = "__is_first_stage__"  # inpainting: the cond stage is the first stage itself

# UNetModel fields we read, and fields that must keep the value that matches LDMUNet.
_UNET_READ = {
    "image_size", "in_channels", "model_channels", "out_channels", "num_res_blocks", "attention_resolutions",
    "dropout", "channel_mult", "num_classes", "num_heads", "num_head_channels", "num_heads_upsample",
    "use_scale_shift_norm", "resblock_updown", "use_new_attention_order", "use_spatial_transformer",
    "transformer_depth", "context_dim", "legacy",
}  # fmt: skip
_UNET_IGNORED = {"use_checkpoint", "use_fp16"}  # memory/precision switches, no effect on the weights
_UNET_FIXED = {
    "dims": 2,
    "conv_resample": True,
    "n_embed": None,
    "disable_self_attentions": None,
    "num_attention_blocks": None,
    "disable_middle_self_attn": False,
    "use_linear_in_transformer": False,
}
_DDCONFIG_FIXED = {"resamp_with_conv": True, "use_linear_attn": False, "give_pre_end": False, "tanh_out": False}


# ------------------------------------------------------------------------------------------- files


def load_original_config(original_config: str | os.PathLike | Mapping) -> dict:
    """The original YAML as a dict (``yaml.safe_load``; a dict is returned as a plain copy).

    Accepts the file's top level (``{"model": {"target": ..., "params": ...}}``) or its ``model`` section.
    """
    if isinstance(original_config, Mapping):
        config = _plain(original_config)
    else:
        path = Path(original_config)
        if not path.is_file():
            raise ModelFileError(f"missing original config: {path}")
        try:
            import yaml
        except ImportError:  # pragma: no cover - pyyaml is a dependency
            raise ImportError("reading an original YAML config needs PyYAML: pip install pyyaml") from None
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ModelFileError(f"corrupt YAML in {path}: {e}") from None
    if not isinstance(config, dict):
        raise TypeError(f"original config must be a mapping, got {type(config).__name__}")
    model = config.get("model", config)
    if not isinstance(model, dict) or "target" not in model:
        raise ValueError("original config has no `model: {target: ..., params: ...}` section")
    return model


def _plain(value):
    """Nested mappings/sequences (e.g. OmegaConf containers) as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def target_name(section: Mapping, field: str) -> str:
    """The class name of a YAML section's ``target`` (``ldm.models.autoencoder.VQModel`` → ``VQModel``)."""
    target = section.get("target")
    if not isinstance(target, str):
        raise ValueError(f"{field}: missing `target`")
    return target.rsplit(".", 1)[-1]


# ------------------------------------------------------------------------------------------- configs


def _check_fields(params: Mapping, read: set, ignored: set, fixed: Mapping, where: str) -> None:
    unknown = sorted(set(params) - read - ignored - set(fixed))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}")
    for field, value in fixed.items():
        if field in params and params[field] != value and not (value is None and not params[field]):
            raise ValueError(f"{where}: {field}={params[field]!r} is not supported (only {value!r})")


def unet_config(unet_params: Mapping) -> dict[str, Any]:
    """Translate ``unet_config.params`` of an original YAML (``openaimodel.UNetModel``) to :class:`LDMUNet` kwargs.

    * levels: ``block_out_channels = model_channels · channel_mult``; attention at level i iff its downsampling
      rate 2^i is in ``attention_resolutions`` (values no level reaches are ignored, as in CompVis; the middle
      block always has attention);
    * heads: ``num_head_channels`` (channels per head) wins over ``num_heads``; with ``legacy`` (the default) a
      SpatialTransformer has ``channels // num_head_channels`` heads of ``channels // heads`` channels each,
      which is ``num_head_channels`` only when it divides the channels (otherwise heads are given per level);
    * ``use_spatial_transformer`` → SpatialTransformer blocks cross-attending to ``context_dim``; otherwise the
      plain AttentionBlock (GroupNorm eps 1e-5); ``num_classes`` → ``num_class_embeds`` (the ``adm`` key).

    Example:
        >>> cfg = unet_config({"image_size": 64, "in_channels": 6, "out_channels": 3, "model_channels": 160,
        ...     "attention_resolutions": [16, 8], "num_res_blocks": 2, "channel_mult": [1, 2, 2, 4],
        ...     "num_head_channels": 32})  # bsr_sr: rate 16 is never reached
        >>> cfg["block_out_channels"], cfg["attention_levels"], cfg["attention_head_dim"]
        ((160, 320, 320, 640), (False, False, False, True), 32)
    """
    p = dict(unet_params)
    where = "unet_config.params"
    _check_fields(p, _UNET_READ, _UNET_IGNORED, _UNET_FIXED, where)
    for field in ("in_channels", "model_channels", "out_channels", "num_res_blocks", "attention_resolutions"):
        if field not in p:
            raise ValueError(f"{where}: missing field {field!r}")

    mult = list(p.get("channel_mult", (1, 2, 4, 8)))
    channels = tuple(p["model_channels"] * m for m in mult)
    num_levels = len(channels)
    blocks = p["num_res_blocks"]
    if isinstance(blocks, (list, tuple)):
        if len(set(blocks)) != 1:
            raise ValueError(f"{where}: per-level num_res_blocks {list(blocks)} are not supported (one value only)")
        blocks = blocks[0]
    rates = set(p["attention_resolutions"])
    attention_levels = tuple(2**i in rates for i in range(num_levels))
    attention_channels = [ch for ch, on in zip(channels, attention_levels) if on] + [channels[-1]]  # + middle

    spatial = bool(p.get("use_spatial_transformer", False))
    legacy = bool(p.get("legacy", True))
    context_dim = p.get("context_dim")
    if spatial and context_dim is None:
        raise ValueError(f"{where}: use_spatial_transformer needs context_dim")
    if context_dim is not None and not spatial:
        raise ValueError(f"{where}: context_dim is set but use_spatial_transformer is not")
    if isinstance(context_dim, (list, tuple)):
        if len(set(context_dim)) != 1:
            raise ValueError(f"{where}: per-block context_dim {list(context_dim)} is not supported")
        context_dim = context_dim[0]
    depth = p.get("transformer_depth", 1)
    if isinstance(depth, (list, tuple)):
        if len(depth) != num_levels:
            raise ValueError(f"{where}: transformer_depth has {len(depth)} entries for {num_levels} levels")
        depth = tuple(depth)

    num_heads, head_channels = p.get("num_heads", -1), p.get("num_head_channels", -1)
    heads_upsample = p.get("num_heads_upsample", -1)
    if head_channels != -1:
        uneven = [ch for ch in attention_channels if ch % head_channels]
        if uneven and not spatial:
            raise ValueError(f"{where}: num_head_channels={head_channels} does not divide the {uneven[0]} channels "
                             "of an attention block")  # fmt: skip
        if uneven and legacy:  # heads = ch // head_channels, each of ch // heads channels (not head_channels)
            heads_kwargs = {"num_attention_heads": tuple(max(ch // head_channels, 1) for ch in channels),
                            "attention_head_dim": None}  # fmt: skip
        else:
            heads_kwargs = {"num_attention_heads": None, "attention_head_dim": head_channels}
    elif num_heads != -1:
        if heads_upsample not in (-1, num_heads) and not spatial and legacy:
            raise ValueError(
                f"{where}: num_heads_upsample={heads_upsample} differs from num_heads={num_heads} (LDMUNet uses "
                "the same heads on both paths)"
            )
        if not spatial:
            for ch in attention_channels:
                if ch % num_heads:
                    raise ValueError(f"{where}: num_heads={num_heads} does not divide the {ch} channels of a level")
        heads_kwargs = {"num_attention_heads": num_heads, "attention_head_dim": None}
    else:
        raise ValueError(f"{where}: either num_heads or num_head_channels has to be set")

    return dict(
        in_channels=p["in_channels"],
        out_channels=p["out_channels"],
        sample_size=p.get("image_size", 32),
        block_out_channels=channels,
        layers_per_block=blocks,
        attention_levels=attention_levels,
        mid_block_attention=True,
        **heads_kwargs,
        transformer_depth=depth,
        cross_attention_dim=context_dim if spatial else None,
        flip_sin_to_cos=True,  # CompVis' timestep_embedding is [cos, sin] with frequencies over dim/2
        freq_shift=0,
        time_embed_dim=None,  # 4 · model_channels, as CompVis
        resnet_time_scale_shift="scale_shift" if p.get("use_scale_shift_norm", False) else "default",
        resblock_updown=bool(p.get("resblock_updown", False)),
        num_class_embeds=p.get("num_classes"),
        norm_num_groups=COMPVIS_NORM_GROUPS,
        norm_eps=UNET_NORM_EPS,
        attention_norm_eps=TRANSFORMER_NORM_EPS if spatial else UNET_NORM_EPS,
        dropout=p.get("dropout", 0.0),
    )


def autoencoder_config(first_stage_config: Mapping) -> tuple[type[AutoencoderKL | VQModel], dict[str, Any]]:
    """Translate a first-stage section (``{target, params: {embed_dim, [n_embed], ddconfig, ...}}``) to
    ``(AutoencoderKL or VQModel, kwargs)``; ``scaling_factor`` is left to the caller.

    Attention inside level i iff its resolution ``ddconfig.resolution / 2^i`` is in ``attn_resolutions``
    (the same levels in E and D); ``attn_type: none`` removes every attention, the middle one included.

    Example:
        >>> cls, cfg = autoencoder_config({"target": "ldm.models.autoencoder.VQModel", "params": {
        ...     "embed_dim": 4, "n_embed": 16384, "ddconfig": {"double_z": False, "z_channels": 4,
        ...     "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128, "ch_mult": [1, 2, 2, 4],
        ...     "num_res_blocks": 2, "attn_resolutions": [32], "dropout": 0.0}}})  # vq-f8
        >>> cls.__name__, cfg["block_out_channels"], cfg["attention_levels"]
        ('VQModel', (128, 256, 256, 512), (False, False, False, True))
    """
    name = target_name(first_stage_config, "first_stage_config")
    params = first_stage_config.get("params") or {}
    if name in KL_TARGETS:
        cls = AutoencoderKL
    elif name in VQ_TARGETS:
        cls = VQModel
    else:
        raise ValueError(
            f"first stage target {first_stage_config['target']!r} is not supported "
            f"(expected one of {list(KL_TARGETS + VQ_TARGETS)})"
        )
    dd = params.get("ddconfig")
    if not isinstance(dd, Mapping):
        raise ValueError(f"{name}: missing params.ddconfig")
    for field, value in _DDCONFIG_FIXED.items():
        if field in dd and dd[field] != value:
            raise ValueError(f"ddconfig.{field}={dd[field]!r} is not supported (only {value!r})")
    if params.get("remap") is not None:
        raise ValueError(f"{name}: params.remap (codebook index remapping) is not supported")
    kl = cls is AutoencoderKL
    if bool(dd.get("double_z", True)) != kl:
        raise ValueError(f"ddconfig.double_z={dd.get('double_z')!r} does not fit a {name} (needs {kl})")
    attn_type = dd.get("attn_type", "vanilla")
    if attn_type not in ("vanilla", "none"):
        raise ValueError(f"ddconfig.attn_type={attn_type!r} is not supported (only 'vanilla' or 'none')")
    for field in ("ch", "ch_mult", "num_res_blocks", "resolution", "in_channels", "out_ch", "z_channels"):
        if field not in dd:
            raise ValueError(f"{name}: params.ddconfig is missing field {field!r} (ddconfig.{field})")

    mult = list(dd["ch_mult"])
    resolution = dd["resolution"]
    rates = set(dd.get("attn_resolutions") or ())
    levels = tuple(attn_type != "none" and resolution // 2**i in rates for i in range(len(mult)))
    z_channels, embed_dim = dd["z_channels"], params.get("embed_dim", dd["z_channels"])
    kwargs: dict[str, Any] = dict(
        in_channels=dd["in_channels"],
        out_channels=dd["out_ch"],
        block_out_channels=tuple(dd["ch"] * m for m in mult),
        layers_per_block=dd["num_res_blocks"],
        latent_channels=z_channels,
        norm_num_groups=COMPVIS_NORM_GROUPS,
        norm_eps=AUTOENCODER_NORM_EPS,
        mid_block_attention=attn_type != "none",
        attention_levels=levels if any(levels) else None,
        sample_size=resolution,
    )
    if kl:
        if embed_dim != z_channels:
            raise ValueError(
                f"AutoencoderKL: embed_dim={embed_dim} differs from ddconfig.z_channels={z_channels} (not supported)"
            )
    else:
        if "n_embed" not in params:
            raise ValueError(f"{name}: missing params.n_embed (codebook size)")
        kwargs.update(num_vq_embeddings=params["n_embed"], vq_embed_dim=embed_dim, commitment_beta=VQ_COMMITMENT_BETA)
    return cls, kwargs


def scheduler_from_original(ldm_params: Mapping, state_dict: Mapping[str, torch.Tensor]) -> DDIMScheduler:
    """The CompVis DDIM sampler for this model (:meth:`DDIMScheduler.compvis`), its β schedule rebuilt from the
    checkpoint's ``betas`` buffer: the YAML's named schedule when the buffer agrees with it, else the buffer
    itself as ``trained_betas``."""
    p = {**LDM_DEFAULTS, **ldm_params}
    T = int(p["timesteps"])
    if p["parameterization"] not in PREDICTION_TYPES:
        raise ValueError(f"parameterization={p['parameterization']!r} is not supported ({list(PREDICTION_TYPES)})")
    prediction_type = PREDICTION_TYPES[p["parameterization"]]
    if p.get("given_betas") is not None:
        named = None
    else:
        named = BETA_SCHEDULES.get(p["beta_schedule"])
    betas = state_dict.get("betas")
    if betas is not None and tuple(betas.shape) != (T,):
        raise ConversionError(
            f"checkpoint key 'betas' has shape {tuple(betas.shape)}, but the YAML's timesteps is {T}"
        )
    schedule = dict(num_train_timesteps=T, beta_start=float(p["linear_start"]), beta_end=float(p["linear_end"]))
    if named is not None:
        expected = make_betas(T, schedule["beta_start"], schedule["beta_end"], named)
        if betas is None or torch.allclose(betas.double(), expected.double(), rtol=BETAS_RTOL, atol=0):
            return DDIMScheduler.compvis(beta_schedule=named, prediction_type=prediction_type, **schedule)
    if betas is None:
        raise ConversionError(
            f"beta_schedule={p['beta_schedule']!r} has no ldm_hub equivalent and the checkpoint has no 'betas' buffer"
        )
    return DDIMScheduler.compvis(trained_betas=betas.double().tolist(), prediction_type=prediction_type, **schedule)
