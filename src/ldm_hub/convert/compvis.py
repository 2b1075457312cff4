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

The pieces: :mod:`~ldm_hub.convert.compvis_config` (the YAML → our constructor arguments),
:mod:`~ldm_hub.convert.checkpoint` (reading the file safely), :mod:`~ldm_hub.convert.compvis_keys` (the key
tables), :mod:`~ldm_hub.convert.compvis_cond` (τ_θ); this module converts each model and returns the components.
Every public name of those modules is importable from here.

Two CompVis layouts need more than a rename: the legacy ``AttentionBlock`` stores q, k and v fused in one
1-D convolution ``qkv`` (3C channels, interleaved per head: [q_h, k_h, v_h] for each head h), split here into
our three projections; and its 1×1 convolutions become Linear weights.

Security: a ``.ckpt`` is a pickle. :mod:`~ldm_hub.convert.checkpoint` lists its globals without unpickling,
binds the known contents of a Lightning checkpoint (callbacks, omegaconf / ``argparse.Namespace``
hyper-parameters, numpy scalars under their numpy-1 and numpy-2 names) to inert stand-ins, refuses any other
global by name unless ``allow_unsafe_pickle=True``, and keeps only the ``state_dict`` tensors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from ..models.autoencoder_kl import AutoencoderKL
from ..models.autoencoder_vq import VQModel
from ..models.unet import LDMUNet
from .checkpoint import load_checkpoint
from .common import ConversionError, convert_state_dict
from .compvis_config import (
    AUTOENCODER_NORM_EPS,
    BETA_SCHEDULES,
    BETAS_RTOL,
    COMPVIS_NORM_GROUPS,
    FIRST_STAGE,
    KL_TARGETS,
    LDM_DEFAULTS,
    LDM_TARGETS,
    PREDICTION_TYPES,
    TRANSFORMER_NORM_EPS,
    UNET_NORM_EPS,
    VQ_COMMITMENT_BETA,
    VQ_TARGETS,
    autoencoder_config,
    load_original_config,
    scheduler_from_original,
    target_name,
    unet_config,
)
from .compvis_keys import (
    COND_STAGE_PREFIX,
    EMA_BOOKKEEPING,
    EMA_PREFIX,
    FIRST_STAGE_PREFIX,
    SCHEDULE_BUFFERS,
    UNET_PREFIX,
    autoencoder_key_map,
    ema_key,
    linear_transforms,
    split_fused_qkv,
    unet_key_map,
)

__all__ = [
    "AUTOENCODER_NORM_EPS", "BETAS_RTOL", "BETA_SCHEDULES", "COMPVIS_NORM_GROUPS", "COND_STAGE_PREFIX",
    "EMA_BOOKKEEPING", "EMA_PREFIX", "FIRST_STAGE", "FIRST_STAGE_PREFIX", "KL_TARGETS", "LDM_DEFAULTS",
    "LDM_TARGETS", "PREDICTION_TYPES", "SCHEDULE_BUFFERS", "TRANSFORMER_NORM_EPS", "UNET_NORM_EPS", "UNET_PREFIX",
    "VQ_COMMITMENT_BETA", "VQ_TARGETS", "ConversionError", "autoencoder_config", "autoencoder_from_single_file",
    "autoencoder_key_map", "check_unet_keys", "convert_autoencoder", "convert_ldm", "convert_single_file",
    "convert_unet", "ema_key", "is_autoencoder_config", "load_checkpoint", "load_original_config",
    "pipeline_from_single_file", "scheduler_from_original", "split_fused_qkv", "unet_config", "unet_key_map",
]  # fmt: skip

# ------------------------------------------------------------------------------------------- conversion


def _load_into(model: torch.nn.Module, converted: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    floats = {k: (v.float() if v.is_floating_point() else v) for k, v in converted.items()}
    model.load_state_dict(floats, strict=True, assign=True)
    return model.eval()


def _convert_unet_weights(
    model: LDMUNet, unet_params: Mapping, state_dict: Mapping[str, torch.Tensor], *, ema: bool, source: str
) -> dict[str, torch.Tensor]:
    key_map = unet_key_map(model)
    transforms = linear_transforms(key_map, model)  # read off the dotted names
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
        transforms=linear_transforms(key_map, model),
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
        convert_state_dict(cond, key_map, vae, source_name=source_name, transforms=linear_transforms(key_map, vae))


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
    name = target_name(model, "model")
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
    return target_name(model, "model") in KL_TARGETS + VQ_TARGETS


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
    name = target_name(model, "model")
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
    pipeline_class: type | None = None,
    use_ema: bool | None = None,
    allow_unsafe_pickle: bool = False,
    tokenizer_vocab: str | None = None,
) -> str:
    """Convert an original checkpoint into an ldm_hub folder (atomically): an autoencoder-only checkpoint into
    a model folder, a full LDM into a pipeline folder. Returns a one-line description of what was written.

    A converter returns components and never imports the pipeline: for a full LDM pass the class that assembles
    them, ``pipeline_class=ldm_hub.LDMPipeline`` (``ldm-hub convert`` does); its ``save_pretrained`` writes the
    folder.

    Example:
        >>> from ldm_hub import LDMPipeline
        >>> convert_single_file("model.ckpt", "config.yaml", "out", pipeline_class=LDMPipeline)  # doctest: +SKIP
        'LDMPipeline folder (text model)'
    """
    from ..loading import atomic_directory

    if is_autoencoder_config(original_config):
        if use_ema:
            raise ValueError("--ema applies to latent diffusion checkpoints; this YAML describes an autoencoder")
        vae = autoencoder_from_single_file(path, original_config, allow_unsafe_pickle=allow_unsafe_pickle)
        with atomic_directory(output) as tmp:
            vae.save_pretrained(tmp)
        return f"{type(vae).__name__} model folder (scaling_factor={vae.config.scaling_factor})"

    if pipeline_class is None:
        raise TypeError(
            "convert_single_file: a latent diffusion checkpoint becomes a pipeline folder; pass the class that "
            "assembles it, pipeline_class=ldm_hub.LDMPipeline (or use LDMPipeline.from_single_file)"
        )
    components = pipeline_from_single_file(
        path, original_config, use_ema=use_ema, allow_unsafe_pickle=allow_unsafe_pickle,
        tokenizer_vocab=tokenizer_vocab,
    )  # fmt: skip
    pipe = pipeline_class(**components)
    pipe.save_pretrained(output)
    return f"{pipeline_class.__name__} folder ({pipe.conditioning} model)"
