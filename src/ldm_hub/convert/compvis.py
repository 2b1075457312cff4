"""Original CompVis checkpoints (a ``.ckpt`` or ``.safetensors`` file plus its YAML) → ldm_hub's classes.

The released LDM zoo (CompVis/latent-diffusion) ships Lightning checkpoints whose ``state_dict`` holds

==============================  ==================================================================
prefix                          what
==============================  ==================================================================
``model.diffusion_model.*``     ε_θ, ``openaimodel.UNetModel`` (``input_blocks.N.k``, ``middle_block``,
                                ``output_blocks.N.k``, ``time_embed``, ``out``, ``label_emb``)
``model_ema.*``                 the EMA copy of ε_θ with the dots stripped (``model_ema.diffusion_modelout0weight``)
                                plus ``model_ema.decay`` / ``model_ema.num_updates``
``first_stage_model.*``         E/D: ``encoder``, ``decoder``, ``quant_conv``, ``post_quant_conv``, ``quantize``
``cond_stage_model.*``          τ_θ (converted by :mod:`ldm_hub.convert.compvis_cond`); for inpainting an alias of
                                the first stage
``betas``, ``alphas_cumprod``…  the DDPM schedule buffers; ``scale_factor`` for ``scale_by_std`` models
==============================  ==================================================================

and the standalone autoencoders (kl-f4 … vq-f16) the first-stage keys without a prefix, plus their training
loss (``loss.*``, dropped). Each model is converted in two steps, as every converter here: its YAML section is
translated to our constructor arguments (a ValueError names any field we cannot represent), then a key table
{CompVis key: our key}, built by walking our model, goes through :func:`~ldm_hub.convert.common.convert_state_dict`,
which checks every key and shape (a :class:`~ldm_hub.convert.common.ConversionError` names the first that
disagrees — the usual symptom of a YAML that does not belong to the checkpoint).

Two CompVis layouts need more than a rename: the legacy ``AttentionBlock`` stores q, k and v fused in one
1-D convolution ``qkv`` (3C channels, interleaved per head: [q_h, k_h, v_h] for each head h), split here into
our three projections; and its 1×1 convolutions become Linear weights.

Security: a ``.ckpt`` is a pickle. It is read with ``torch.load(weights_only=True)``; a file that needs more
(Lightning callbacks, OmegaConf objects) is refused with an explanation unless ``allow_unsafe_pickle=True``.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..loading import ModelFileError, load_safetensors_file
from ..models.attention import SelfAttentionBlock, SpatialTransformer
from ..models.autoencoder_kl import AutoencoderKL
from ..models.autoencoder_vq import VQModel
from ..models.unet import Downsample, LDMUNet, ResBlock, Upsample
from ..schedulers.common import make_betas
from ..schedulers.ddim import DDIMScheduler
from .common import ConversionError, convert_state_dict
from .diffusers_unet import TRANSFORMER_BLOCK_KEYS

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


def _target_name(section: Mapping, field: str) -> str:
    target = section.get("target")
    if not isinstance(target, str):
        raise ValueError(f"{field}: missing `target`")
    return target.rsplit(".", 1)[-1]


def load_checkpoint(path: str | os.PathLike, *, allow_unsafe_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of an original checkpoint: a Lightning ``.ckpt`` (its ``state_dict``) or a ``.safetensors``.

    ``.ckpt`` files are unpickled with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain
    containers. A file that needs more is refused, saying why, unless ``allow_unsafe_pickle=True`` (only for
    files you trust: unpickling can run arbitrary code).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"missing checkpoint: {path}")
    if path.suffix == ".safetensors":
        return load_safetensors_file(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not allow_unsafe_pickle:
            reason = str(e).strip().splitlines()
            reason = next((line for line in reason if "Unsupported" in line or "global" in line), reason[0])
            raise ModelFileError(
                f"refusing to load {path}: torch.load(weights_only=True) failed because the file holds Python "
                f"objects other than tensors ({reason.strip()}). A .ckpt is a pickle, and unpickling it can run "
                "arbitrary code. If you trust this file, allow it explicitly with allow_unsafe_pickle=True "
                "(CLI: --allow-unsafe-pickle), or convert it to .safetensors once and use that."
            ) from None
        obj = _unsafe_load(path)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a broken file
        raise ModelFileError(f"could not read checkpoint {path}: {type(e).__name__}: {e}") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ModelFileError(f"{path} holds no state dict (found {type(obj).__name__})")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ModelFileError(f"{path}: state dict entries that are not tensors: {not_tensors[:5]}")
    return dict(obj)


def _unsafe_load(path: Path):
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise ModelFileError(f"could not read checkpoint {path}: {type(e).__name__}: {e}") from None


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
    name = _target_name(first_stage_config, "first_stage_config")
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


def _linear_transforms(key_map: Mapping[str, str], model: torch.nn.Module) -> dict:
    """{our key: squeeze} for the CompVis convolution kernels that are Linear weights here."""
    params = dict(model.named_parameters())
    return {ours: _conv_to_linear for theirs, ours in key_map.items()
            if _CONV_AS_LINEAR.search(theirs) and params[ours].ndim == 2}  # fmt: skip


# ------------------------------------------------------------------------------------------- conversion


def _load_into(model: torch.nn.Module, converted: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    floats = {k: (v.float() if v.is_floating_point() else v) for k, v in converted.items()}
    model.load_state_dict(floats, strict=True, assign=True)
    return model.eval()


def ema_key(key: str) -> str:
    """The ``model_ema`` name of a UNet key: ``model.diffusion_model.a.b`` → ``model_ema.diffusion_modelab``
    (LitEma strips the dots; a fused-part suffix ``:q`` is kept)."""
    key, _, part = key.partition(":")
    name = EMA_PREFIX + key[len("model.") :].replace(".", "")
    return f"{name}:{part}" if part else name


def _convert_unet_weights(
    model: LDMUNet, unet_params: Mapping, state_dict: Mapping[str, torch.Tensor], *, ema: bool, source: str
) -> dict[str, torch.Tensor]:
    key_map = unet_key_map(model)
    transforms = _linear_transforms(key_map, model)  # read off the dotted names
    if ema:
        key_map = {ema_key(k): v for k, v in key_map.items()}
        prefix, what = EMA_PREFIX, "EMA weights (model_ema.*)"
        source_dict = {k: v for k, v in state_dict.items() if k.startswith(prefix) and k not in EMA_BOOKKEEPING}
    else:
        prefix, what = UNET_PREFIX, "UNet (model.diffusion_model.*)"
        source_dict = {k: v for k, v in state_dict.items() if k.startswith(prefix)}
    source_dict = split_fused_qkv(
        source_dict, key_map, model, new_order=bool(unet_params.get("use_new_attention_order", False))
    )
    return convert_state_dict(source_dict, key_map, model, source_name=f"{source}: {what}", transforms=transforms)


def convert_unet(
    unet_params: Mapping, state_dict: Mapping[str, torch.Tensor], *, ema: bool = False, source: str = "checkpoint"
) -> LDMUNet:
    """Build an :class:`LDMUNet` from ``unet_config.params`` and the checkpoint's ``model.diffusion_model.*``
    tensors (or, with ``ema=True``, its ``model_ema.*`` copy). Other keys of ``state_dict`` are ignored."""
    with torch.device("meta"):
        model = LDMUNet(**unet_config(unet_params))
    return _load_into(model, _convert_unet_weights(model, unet_params, state_dict, ema=ema, source=source))


def check_unet_keys(
    unet_params: Mapping, state_dict: Mapping[str, torch.Tensor], *, ema: bool, source: str = "checkpoint"
) -> None:
    """Check names and shapes of the UNet copy a conversion does not use (raw or EMA), without its data."""
    with torch.device("meta"):
        model = LDMUNet(**unet_config(unet_params))
        shapes = {k: torch.empty(v.shape, dtype=v.dtype) for k, v in state_dict.items()}
    _convert_unet_weights(model, unet_params, shapes, ema=ema, source=source)


def convert_autoencoder(
    first_stage_config: Mapping,
    state_dict: Mapping[str, torch.Tensor],
    *,
    scaling_factor: float,
    prefix: str = "",
    source: str = "checkpoint",
) -> AutoencoderKL | VQModel:
    """Build our AutoencoderKL / VQModel from a first-stage YAML section and the tensors under ``prefix``
    (``""`` for a standalone autoencoder checkpoint, whose ``loss.*`` keys are dropped)."""
    cls, kwargs = autoencoder_config(first_stage_config)
    with torch.device("meta"):
        model = cls(**kwargs, scaling_factor=float(scaling_factor))
    key_map = autoencoder_key_map(model, prefix)
    loss = f"{prefix}loss."
    source_dict = {k: v for k, v in state_dict.items() if k.startswith(prefix) and not k.startswith(loss)}
    converted = convert_state_dict(
        source_dict,
        key_map,
        model,
        source_name=f"{source}: {cls.__name__}" + (f" ({prefix}*)" if prefix else ""),
        transforms=_linear_transforms(key_map, model),
    )
    return _load_into(model, converted)


def _check_top_level(state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    prefixes = (UNET_PREFIX, EMA_PREFIX, FIRST_STAGE_PREFIX, COND_STAGE_PREFIX)
    unknown = [k for k in state_dict if not k.startswith(prefixes) and k not in SCHEDULE_BUFFERS | {"scale_factor"}]
    if unknown:
        raise ConversionError(f"{source}: {len(unknown)} unexpected key(s) with no mapping, first: {unknown[:5]}")


def _scaling_factor(params: Mapping, state_dict: Mapping[str, torch.Tensor], source: str) -> float:
    if params.get("scale_by_std", False):
        if "scale_factor" not in state_dict:
            raise ConversionError(f"{source}: the YAML sets scale_by_std but the checkpoint has no 'scale_factor' key")
        return float(state_dict["scale_factor"])
    if "scale_factor" in state_dict:
        raise ConversionError(
            f"{source}: checkpoint key 'scale_factor' (a scale_by_std model) does not match the YAML, which does not "
            "set scale_by_std"
        )
    return float(params.get("scale_factor", LDM_DEFAULTS["scale_factor"]))


def _check_first_stage_alias(vae: AutoencoderKL | VQModel, state_dict: Mapping, source: str) -> None:
    """``cond_stage_config: __is_first_stage__`` aliases the first stage: any ``cond_stage_model.*`` keys must be
    its duplicates (every key and shape; the released inpainting_big checkpoint has none)."""
    cond = {k: v for k, v in state_dict.items() if k.startswith(COND_STAGE_PREFIX)}
    if cond:
        key_map = autoencoder_key_map(vae, COND_STAGE_PREFIX)
        source_name = f"{source}: cond_stage_model.* (an alias of the first stage)"
        convert_state_dict(cond, key_map, vae, source_name=source_name, transforms=_linear_transforms(key_map, vae))


def convert_ldm(
    original_config: str | os.PathLike | Mapping,
    state_dict: Mapping[str, torch.Tensor],
    *,
    use_ema: bool | None = None,
    tokenizer_vocab: str | None = None,
    source: str = "checkpoint",
) -> dict[str, Any]:
    """The components of an :class:`~ldm_hub.LDMPipeline` (``vae``, ``unet``, ``scheduler``, ``cond_encoder``,
    ``tokenizer``) from a LatentDiffusion YAML and its checkpoint's state dict.

    ``use_ema``: None uses the ``model_ema.*`` weights when the checkpoint has them (as the CompVis sampling
    scripts do), True requires them, False takes the raw ``model.diffusion_model.*`` weights.
    """
    model = load_original_config(original_config)
    name = _target_name(model, "model")
    if name not in LDM_TARGETS:
        raise ValueError(
            f"model.target {model['target']!r} is not a latent diffusion model (expected one of {list(LDM_TARGETS)}); "
            "for an autoencoder checkpoint use AutoencoderKL/VQModel.from_single_file"
        )
    params = model.get("params") or {}
    for field in ("unet_config", "first_stage_config", "cond_stage_config"):
        if field not in params:
            raise ValueError(f"model.params: missing {field!r}")
    _check_top_level(state_dict, source)

    has_ema = any(k.startswith(EMA_PREFIX) for k in state_dict)
    if use_ema and not has_ema:
        raise ConversionError(f"{source}: use_ema=True but the checkpoint has no EMA weights (model_ema.*)")
    unet_params = params["unet_config"].get("params") or {}
    ema = has_ema and use_ema is not False
    unet = convert_unet(unet_params, state_dict, ema=ema, source=source)
    unused = EMA_PREFIX if not ema else UNET_PREFIX
    if any(k.startswith(unused) for k in state_dict):  # the copy left behind must fit the YAML too
        check_unet_keys(unet_params, {k: v for k, v in state_dict.items() if k.startswith(unused)}, ema=not ema,
                        source=source)  # fmt: skip
    vae = convert_autoencoder(
        params["first_stage_config"], state_dict, scaling_factor=_scaling_factor(params, state_dict, source),
        prefix=FIRST_STAGE_PREFIX, source=source,
    )  # fmt: skip
    scheduler = scheduler_from_original(params, state_dict)

    cond_config = params["cond_stage_config"]
    cond_state = {k[len(COND_STAGE_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(COND_STAGE_PREFIX)}
    if cond_config == FIRST_STAGE:
        _check_first_stage_alias(vae, state_dict, source)
        cond_state = {}
    from .compvis_cond import convert_cond_stage

    cond_encoder, tokenizer = convert_cond_stage(cond_config, cond_state, tokenizer_vocab=tokenizer_vocab)
    return dict(vae=vae, unet=unet, scheduler=scheduler, cond_encoder=cond_encoder, tokenizer=tokenizer)


def is_autoencoder_config(original_config: str | os.PathLike | Mapping) -> bool:
    """True for a standalone first-stage YAML (``ldm.models.autoencoder.AutoencoderKL`` / ``VQModel``)."""
    model = load_original_config(original_config)
    return _target_name(model, "model") in KL_TARGETS + VQ_TARGETS


# ------------------------------------------------------------------------------------------- entry points


def pipeline_from_single_file(
    path: str | os.PathLike,
    original_config: str | os.PathLike | Mapping,
    *,
    use_ema: bool | None = None,
    allow_unsafe_pickle: bool = False,
    tokenizer_vocab: str | None = None,
) -> dict[str, Any]:
    """Read an original LDM checkpoint and convert it: the components for ``LDMPipeline(**components)``."""
    state_dict = load_checkpoint(path, allow_unsafe_pickle=allow_unsafe_pickle)
    return convert_ldm(original_config, state_dict, use_ema=use_ema, tokenizer_vocab=tokenizer_vocab,
                       source=str(path))  # fmt: skip


def autoencoder_from_single_file(
    path: str | os.PathLike,
    original_config: str | os.PathLike | Mapping,
    *,
    expected: type | None = None,
    allow_unsafe_pickle: bool = False,
    scaling_factor: float | None = None,
) -> AutoencoderKL | VQModel:
    """An autoencoder from an original checkpoint: a standalone first stage (kl-f8, vq-f4, … : YAML target
    ``ldm.models.autoencoder.*``, keys without prefix, ``loss.*`` dropped) or the first stage of a full LDM
    (LatentDiffusion YAML, ``first_stage_model.*``).

    ``scaling_factor``: written explicitly into the config; default 1.0 for a standalone autoencoder (it has
    none of its own) and the LDM's own factor (YAML or ``scale_factor`` buffer) for an LDM's first stage.
    """
    model = load_original_config(original_config)
    state_dict = load_checkpoint(path, allow_unsafe_pickle=allow_unsafe_pickle)
    name = _target_name(model, "model")
    if name in LDM_TARGETS:
        params = model.get("params") or {}
        section, prefix = params.get("first_stage_config"), FIRST_STAGE_PREFIX
        if section is None:
            raise ValueError("model.params: missing 'first_stage_config'")
        default_scale = _scaling_factor(params, state_dict, str(path))
    elif name in KL_TARGETS + VQ_TARGETS:
        section, prefix, default_scale = model, "", 1.0
        unknown = [k for k in state_dict if k.startswith((UNET_PREFIX, EMA_PREFIX, FIRST_STAGE_PREFIX))]
        if unknown:
            raise ConversionError(
                f"{path}: key {unknown[0]!r} belongs to a full LDM checkpoint, but the YAML describes a standalone "
                "autoencoder"
            )
    else:
        raise ValueError(f"model.target {model['target']!r} is neither an autoencoder nor a latent diffusion model")
    cls, _ = autoencoder_config(section)
    if expected is not None and cls is not expected:
        raise ValueError(
            f"the YAML's first stage {section['target']!r} is a {cls.__name__}; use {cls.__name__}.from_single_file"
        )
    scale = default_scale if scaling_factor is None else scaling_factor
    return convert_autoencoder(section, state_dict, scaling_factor=scale, prefix=prefix, source=str(path))


def convert_single_file(
    path: str | os.PathLike,
    original_config: str | os.PathLike | Mapping,
    output: str | os.PathLike,
    *,
    use_ema: bool | None = None,
    allow_unsafe_pickle: bool = False,
    tokenizer_vocab: str | None = None,
) -> str:
    """Convert an original checkpoint into an ldm_hub folder (atomically): an autoencoder-only checkpoint into
    a model folder, a full LDM into a pipeline folder. Returns a one-line description of what was written."""
    from ..loading import atomic_directory

    if is_autoencoder_config(original_config):
        if use_ema:
            raise ValueError("--ema applies to latent diffusion checkpoints; this YAML describes an autoencoder")
        vae = autoencoder_from_single_file(path, original_config, allow_unsafe_pickle=allow_unsafe_pickle)
        with atomic_directory(output) as tmp:
            vae.save_pretrained(tmp)
        return f"{type(vae).__name__} model folder (scaling_factor={vae.config.scaling_factor})"

    from ..pipelines.ldm_pipeline import LDMPipeline

    pipe = LDMPipeline.from_single_file(
        path, original_config=original_config, use_ema=use_ema, allow_unsafe_pickle=allow_unsafe_pickle,
        tokenizer_vocab=tokenizer_vocab,
    )  # fmt: skip
    pipe.save_pretrained(output)
    return f"LDMPipeline folder ({pipe.conditioning} model)"
