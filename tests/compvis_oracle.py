"""The original CompVis code as a test oracle: the LDM zoo's YAMLs, the original modules, Lightning checkpoints.

Everything here is test-only. The original implementation comes from PyPI (``stable-diffusion-sdkit``: ``ldm/``,
``taming-transformers-rom1504``: ``taming/``; see tests/oracles.txt):

* ``ZOO``: the ``model:`` section of every released YAML (CompVis/latent-diffusion ``models/ldm/*/config.yaml``,
  ``configs/latent-diffusion/*.yaml``, ``models/first_stage_models/*/config.yaml``), written from those files;
  :func:`tiny` scales the channel counts down and keeps the structure (levels, attention rates, heads or
  channels per head, transformer depth, concat channels, codebooks).
* :func:`original_unet` builds ``openaimodel.UNetModel``; the PyPI copy is the Stable Diffusion 2 fork, whose
  SpatialTransformer raises IndexError for ``transformer_depth > 1`` with one ``context_dim`` (layout2img has
  depth 3): :class:`CompVisSpatialTransformer` restores the CompVis original, which gives every block the same
  context. :class:`OriginalFirstStage` is ``ldm.models.autoencoder.AutoencoderKL`` / ``VQModel`` (which need
  pytorch_lightning) rebuilt from their parts with the original attribute names.
* :func:`write_checkpoint` saves a Lightning-style ``.ckpt`` in the original key layout (``model.diffusion_model``,
  ``model_ema`` with dots stripped, ``first_stage_model``, ``cond_stage_model``, the schedule buffers).
* :class:`FakeLatentDiffusion` carries the attributes ``DDIMSampler`` / ``PLMSSampler`` read from a LatentDiffusion.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from compvis_cond_fixtures import cond_stage_state_dict
from ldm.modules import attention as ldm_attention
from ldm.modules.diffusionmodules import openaimodel
from ldm.modules.diffusionmodules.model import Decoder, Encoder
from ldm.modules.diffusionmodules.util import make_beta_schedule
from ldm.modules.distributions.distributions import DiagonalGaussianDistribution
from taming.modules.vqvae.quantize import VectorQuantizer2
from torch import nn
from utils import randomize_

LDM = "ldm.models.diffusion.ddpm.LatentDiffusion"
BERT = "ldm.modules.encoders.modules.BERTEmbedder"
CLASS = "ldm.modules.encoders.modules.ClassEmbedder"
RESCALER = "ldm.modules.encoders.modules.SpatialRescaler"


# ---------------------------------------------------------------------------------------------- the zoo YAMLs
def _ddconfig(z, ch_mult, attn=(), double_z=False, **extra):
    return dict(
        double_z=double_z,
        z_channels=z,
        resolution=256,
        in_channels=3,
        out_ch=3,
        ch=128,
        ch_mult=list(ch_mult),
        num_res_blocks=2,
        attn_resolutions=list(attn),
        dropout=0.0,
        **extra,
    )


def _kl(z, ch_mult, attn=(), target="ldm.models.autoencoder.AutoencoderKL"):
    return {
        "target": target,
        "params": {
            "embed_dim": z,
            "monitor": "val/rec_loss",
            "ddconfig": _ddconfig(z, ch_mult, attn, double_z=True),
            "lossconfig": {"target": "torch.nn.Identity"},
        },
    }


def _vq(z, n_embed, ch_mult, attn=(), target="ldm.models.autoencoder.VQModelInterface", **extra):
    return {
        "target": target,
        "params": {
            "embed_dim": z,
            "n_embed": n_embed,
            "ddconfig": _ddconfig(z, ch_mult, attn, **extra),
            "lossconfig": {"target": "torch.nn.Identity"},
        },
    }


def _unet(**params):
    return {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel", "params": params}


def _ldm(unet, first_stage, cond_stage, **params):
    return {
        "target": LDM,
        "params": {
            "timesteps": 1000,
            "unet_config": unet,
            "first_stage_config": first_stage,
            "cond_stage_config": cond_stage,
            **params,
        },
    }


VQ_F4 = _vq(3, 8192, (1, 2, 4))
KL_F8 = _kl(4, (1, 2, 4, 4))
_FACES = dict(
    linear_start=0.0015,
    linear_end=0.0195,
    first_stage_key="image",
    cond_stage_key="class_label",
    image_size=64,
    channels=3,
    cond_stage_trainable=False,
    concat_mode=False,
    monitor="val/loss",
)
_FACES_UNET = _unet(
    image_size=64,
    in_channels=3,
    out_channels=3,
    model_channels=224,
    attention_resolutions=[8, 4, 2],
    num_res_blocks=2,
    channel_mult=[1, 2, 3, 4],
    num_head_channels=32,
)
_SEMANTIC = dict(
    linear_start=0.0015,
    linear_end=0.0205,
    loss_type="l1",
    first_stage_key="image",
    cond_stage_key="segmentation",
    channels=3,
    concat_mode=True,
    cond_stage_trainable=True,
)
_SEMANTIC_COND = {"target": RESCALER, "params": {"n_stages": 2, "in_channels": 182, "out_channels": 3}}


def _semantic(size):
    unet = _unet(
        image_size=size,
        in_channels=6,
        out_channels=3,
        model_channels=128,
        attention_resolutions=[32, 16, 8],
        num_res_blocks=2,
        channel_mult=[1, 4, 8],
        num_heads=8,
    )
    return _ldm(unet, VQ_F4, _SEMANTIC_COND, image_size=size, **_SEMANTIC)


ZOO: dict[str, dict[str, Any]] = {
    "txt2img-1p4B": _ldm(
        _unet(
            image_size=32,
            in_channels=4,
            out_channels=4,
            model_channels=320,
            attention_resolutions=[4, 2, 1],
            num_res_blocks=2,
            channel_mult=[1, 2, 4, 4],
            num_heads=8,
            use_spatial_transformer=True,
            transformer_depth=1,
            context_dim=1280,
            use_checkpoint=True,
            legacy=False,
        ),
        KL_F8,
        {"target": BERT, "params": {"n_embed": 1280, "n_layer": 32}},
        linear_start=0.00085,
        linear_end=0.012,
        num_timesteps_cond=1,
        log_every_t=200,
        first_stage_key="image",
        cond_stage_key="caption",
        image_size=32,
        channels=4,
        cond_stage_trainable=True,
        conditioning_key="crossattn",
        monitor="val/loss_simple_ema",
        scale_factor=0.18215,
        use_ema=False,
    ),
    "text2img256": _ldm(
        _unet(
            image_size=64,
            in_channels=3,
            out_channels=3,
            model_channels=192,
            attention_resolutions=[8, 4, 2],
            num_res_blocks=2,
            channel_mult=[1, 2, 3, 5],
            num_head_channels=32,
            use_spatial_transformer=True,
            transformer_depth=1,
            context_dim=640,
        ),
        VQ_F4,
        {"target": BERT, "params": {"n_embed": 640, "n_layer": 32}},
        linear_start=0.0015,
        linear_end=0.0195,
        first_stage_key="image",
        cond_stage_key="caption",
        image_size=64,
        channels=3,
        cond_stage_trainable=True,
        conditioning_key="crossattn",
    ),
    "layout2img-openimages256": _ldm(
        _unet(
            image_size=64,
            in_channels=3,
            out_channels=3,
            model_channels=128,
            attention_resolutions=[8, 4, 2],
            num_res_blocks=2,
            channel_mult=[1, 2, 3, 4],
            num_head_channels=32,
            use_spatial_transformer=True,
            transformer_depth=3,
            context_dim=512,
        ),
        VQ_F4,
        {
            "target": BERT,
            "params": {"n_embed": 512, "n_layer": 16, "vocab_size": 8192, "max_seq_len": 92, "use_tokenizer": False},
        },
        linear_start=0.0015,
        linear_end=0.0205,
        loss_type="l1",
        first_stage_key="image",
        cond_stage_key="coordinates_bbox",
        image_size=64,
        channels=3,
        conditioning_key="crossattn",
        cond_stage_trainable=True,
    ),
    "semantic_synthesis256": _semantic(64),
    "semantic_synthesis512": _semantic(128),
    "bsr_sr": _ldm(
        _unet(
            image_size=64,
            in_channels=6,
            out_channels=3,
            model_channels=160,
            attention_resolutions=[16, 8],
            num_res_blocks=2,
            channel_mult=[1, 2, 2, 4],
            num_head_channels=32,
        ),
        VQ_F4,
        {"target": "torch.nn.Identity"},
        linear_start=0.0015,
        linear_end=0.0155,
        loss_type="l2",
        first_stage_key="image",
        cond_stage_key="LR_image",
        image_size=64,
        channels=3,
        concat_mode=True,
        cond_stage_trainable=False,
    ),
    "inpainting_big": _ldm(
        _unet(
            image_size=64,
            in_channels=7,
            out_channels=3,
            model_channels=256,
            attention_resolutions=[8, 4, 2],
            num_res_blocks=2,
            channel_mult=[1, 2, 3, 4],
            num_heads=8,
            resblock_updown=True,
        ),
        _vq(3, 8192, (1, 2, 4), attn_type="none"),
        "__is_first_stage__",
        linear_start=0.0015,
        linear_end=0.0205,
        loss_type="l1",
        first_stage_key="image",
        cond_stage_key="masked_image",
        image_size=64,
        channels=3,
        concat_mode=True,
    ),
    "cin256": _ldm(
        _unet(
            image_size=32,
            in_channels=4,
            out_channels=4,
            model_channels=256,
            attention_resolutions=[4, 2, 1],
            num_res_blocks=2,
            channel_mult=[1, 2, 4],
            num_head_channels=32,
            use_spatial_transformer=True,
            transformer_depth=1,
            context_dim=512,
        ),
        _vq(4, 16384, (1, 2, 2, 4), attn=(32,)),
        {"target": CLASS, "params": {"embed_dim": 512, "key": "class_label"}},
        linear_start=0.0015,
        linear_end=0.0195,
        first_stage_key="image",
        cond_stage_key="class_label",
        image_size=32,
        channels=4,
        cond_stage_trainable=True,
        conditioning_key="crossattn",
    ),
    "cin256-v2": _ldm(
        _unet(
            image_size=64,
            in_channels=3,
            out_channels=3,
            model_channels=192,
            attention_resolutions=[8, 4, 2],
            num_res_blocks=2,
            channel_mult=[1, 2, 3, 5],
            num_heads=1,
            use_spatial_transformer=True,
            transformer_depth=1,
            context_dim=512,
        ),
        VQ_F4,
        {"target": CLASS, "params": {"n_classes": 1001, "embed_dim": 512, "key": "class_label"}},
        linear_start=0.0015,
        linear_end=0.0195,
        first_stage_key="image",
        cond_stage_key="class_label",
        image_size=64,
        channels=3,
        cond_stage_trainable=True,
        conditioning_key="crossattn",
        use_ema=False,
    ),
    "celebahq": _ldm(_FACES_UNET, VQ_F4, "__is_unconditional__", **_FACES),
    "ffhq": _ldm(_FACES_UNET, VQ_F4, "__is_unconditional__", **_FACES),
    "lsun-bedrooms": _ldm(_FACES_UNET, VQ_F4, "__is_unconditional__", **_FACES),
    "lsun-churches": _ldm(
        _unet(
            image_size=32,
            in_channels=4,
            out_channels=4,
            model_channels=192,
            attention_resolutions=[1, 2, 4, 8],
            num_res_blocks=2,
            channel_mult=[1, 2, 2, 4, 4],
            num_heads=8,
            use_scale_shift_norm=True,
            resblock_updown=True,
        ),
        KL_F8,
        "__is_unconditional__",
        linear_start=0.0015,
        linear_end=0.0155,
        loss_type="l1",
        first_stage_key="image",
        cond_stage_key="image",
        image_size=32,
        channels=4,
        cond_stage_trainable=False,
        concat_mode=False,
        scale_by_std=True,
    ),
    # the standalone first stages (models/first_stage_models/*/config.yaml)
    "kl-f4": _kl(3, (1, 2, 4)),
    "kl-f8": _kl(4, (1, 2, 4, 4)),
    "kl-f16": _kl(16, (1, 1, 2, 2, 4), attn=(16,)),
    "kl-f32": _kl(64, (1, 1, 2, 2, 4, 4), attn=(16, 8)),
    "vq-f4": _vq(3, 8192, (1, 2, 4), target="ldm.models.autoencoder.VQModel"),
    "vq-f4-noattn": _vq(3, 8192, (1, 2, 4), target="ldm.models.autoencoder.VQModel", attn_type="none"),
    "vq-f8": _vq(4, 16384, (1, 2, 2, 4), attn=(32,), target="ldm.models.autoencoder.VQModel"),
    "vq-f8-n256": _vq(4, 256, (1, 2, 2, 4), attn=(32,), target="ldm.models.autoencoder.VQModel"),
    "vq-f16": _vq(8, 16384, (1, 1, 2, 2, 4), attn=(16,), target="ldm.models.autoencoder.VQModel"),
}
for _name in ("kl-f4", "kl-f8", "kl-f16", "kl-f32"):  # the zoo autoencoders were trained with LPIPS + a discriminator
    ZOO[_name]["params"]["lossconfig"] = {
        "target": "ldm.modules.losses.LPIPSWithDiscriminator",
        "params": {"disc_start": 50001, "kl_weight": 1e-6, "disc_weight": 0.5},
    }
AUTOENCODERS = [n for n, c in ZOO.items() if c["target"] != LDM]
LDMS = [n for n, c in ZOO.items() if c["target"] == LDM]

# Tiny sizes: 32 channels per unit of channel_mult (CompVis' GroupNorm has 32 groups), 8 channels per head where
# the model sets channels per head, 2 BERT layers, the context width of the tiny condition encoder.
TINY_CHANNELS = 32
TINY_HEAD_CHANNELS = 8
TINY_CONTEXT = 48
TINY_BERT_LAYERS = 2


def tiny(config: Mapping[str, Any]) -> dict[str, Any]:
    """A structure-preserving scaled-down copy of a zoo YAML (see the TINY_* constants)."""
    config = copy.deepcopy(dict(config))
    params = config["params"]
    if config["target"] != LDM:
        params["ddconfig"]["ch"] = TINY_CHANNELS
        return config
    params["first_stage_config"]["params"]["ddconfig"]["ch"] = TINY_CHANNELS
    unet = params["unet_config"]["params"]
    unet["model_channels"] = TINY_CHANNELS
    if "num_head_channels" in unet:
        unet["num_head_channels"] = TINY_HEAD_CHANNELS
    if "context_dim" in unet:
        unet["context_dim"] = TINY_CONTEXT
    cond = params["cond_stage_config"]
    if isinstance(cond, dict) and cond["target"] == BERT:
        cond["params"].update(n_embed=TINY_CONTEXT, n_layer=TINY_BERT_LAYERS)
    elif isinstance(cond, dict) and cond["target"] == CLASS:
        cond["params"]["embed_dim"] = TINY_CONTEXT
    return config


# ------------------------------------------------------------------------------------- the original modules
class CompVisSpatialTransformer(ldm_attention.SpatialTransformer):
    """The CompVis original's behaviour in the SD2-era class: one context_dim for all ``depth`` blocks."""

    def __init__(self, in_channels, n_heads, d_head, depth=1, dropout=0.0, context_dim=None, **kwargs):
        if context_dim is not None and not isinstance(context_dim, list):
            context_dim = [context_dim] * depth
        super().__init__(in_channels, n_heads, d_head, depth=depth, dropout=dropout, context_dim=context_dim, **kwargs)

    def forward(self, x, context=None):
        if not isinstance(context, list):
            context = [context] * len(self.transformer_blocks)
        return super().forward(x, context)


def original_unet(unet_params: Mapping[str, Any], seed: int = 0) -> nn.Module:
    """``openaimodel.UNetModel(**params)`` with every parameter random, in eval mode."""
    params = dict(unet_params, use_checkpoint=False)
    saved = openaimodel.SpatialTransformer
    openaimodel.SpatialTransformer = CompVisSpatialTransformer  # construction only; isinstance still holds after
    try:
        unet = openaimodel.UNetModel(**params)
    finally:
        openaimodel.SpatialTransformer = saved
    return randomize_(unet, seed).eval()


class OriginalFirstStage(nn.Module):
    """``ldm.models.autoencoder.AutoencoderKL`` / ``VQModel`` without Lightning: same attributes, same maths."""

    def __init__(self, first_stage_config: Mapping[str, Any]):
        super().__init__()
        params = first_stage_config["params"]
        dd = params["ddconfig"]
        self.kl = first_stage_config["target"].endswith("AutoencoderKL")
        self.encoder = Encoder(**dd)
        self.decoder = Decoder(**dd)
        embed_dim, z = params["embed_dim"], dd["z_channels"]
        if self.kl:
            self.quant_conv = nn.Conv2d(2 * z, 2 * embed_dim, 1)
            self.post_quant_conv = nn.Conv2d(embed_dim, z, 1)
        else:
            self.quantize = VectorQuantizer2(params["n_embed"], embed_dim, beta=0.25)
            self.quant_conv = nn.Conv2d(z, embed_dim, 1)
            self.post_quant_conv = nn.Conv2d(embed_dim, z, 1)

    def encode(self, x):
        """KL: the posterior (a DiagonalGaussianDistribution); VQ: the pre-quantisation latents (VQModelInterface)."""
        h = self.quant_conv(self.encoder(x))
        return DiagonalGaussianDistribution(h) if self.kl else h

    def decode(self, z):
        if not self.kl:
            z, _, _ = self.quantize(z)
        return self.decoder(self.post_quant_conv(z))


def original_first_stage(first_stage_config: Mapping[str, Any], seed: int = 0) -> OriginalFirstStage:
    return randomize_(OriginalFirstStage(first_stage_config), seed).eval()


# -------------------------------------------------------------------------------------------- checkpoints
def schedule_buffers(params: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """``DDPM.register_schedule`` of CompVis (float64 numpy maths stored as float32 buffers)."""
    T = params.get("timesteps", 1000)
    betas = make_beta_schedule(
        params.get("beta_schedule", "linear"), T, linear_start=params["linear_start"], linear_end=params["linear_end"]
    )
    alphas_cumprod = np.cumprod(1.0 - betas, axis=0)
    alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    buffers = {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": alphas_cumprod_prev,
        "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
        "log_one_minus_alphas_cumprod": np.log(1.0 - alphas_cumprod),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod - 1),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": np.log(np.maximum(posterior_variance, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
        "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * np.sqrt(1.0 - betas) / (1.0 - alphas_cumprod),
    }
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in buffers.items()}


def ema_state(unet: nn.Module) -> dict[str, torch.Tensor]:
    """``LitEma(model)``'s buffers for a DiffusionWrapper holding ``unet``: names with the dots stripped."""
    out = {"model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(1234, dtype=torch.int32)}
    for name, p in unet.named_parameters():
        out["model_ema." + ("diffusion_model." + name).replace(".", "")] = p.detach()
    return out


class UnpicklableByDefault:
    """Stands for Lightning's callback objects: a class that ``torch.load(weights_only=True)`` refuses."""

    def __init__(self, note: str = "ModelCheckpoint"):
        self.note = note


SCALE_BY_STD_FACTOR = 0.7316  # what scale_by_std measured; any value that is not the YAML's


class OriginalModel:
    """The original modules of one zoo model and the checkpoint written from them.

    ``unet`` holds the weights a CompVis sampler uses (the EMA copy when there is one), ``raw_unet`` the
    ``model.diffusion_model`` weights (other random values, so EMA vs raw is visible, unless ``distinct_raw``
    is False). ``state_dict`` shares the modules' tensors (no copies).
    """

    def __init__(self, config: Mapping[str, Any], seed: int = 0, *, distinct_raw: bool = True):
        self.config = config
        self.is_ldm = config["target"] == LDM
        params = config["params"]
        self.first_stage = original_first_stage(params["first_stage_config"] if self.is_ldm else config, seed + 1)
        self.unet = self.raw_unet = None
        self.cond_stage_config = None
        if self.is_ldm:
            unet_params = params["unet_config"]["params"]
            self.unet = original_unet(unet_params, seed + 2)
            self.has_ema = params.get("use_ema", True)
            distinct = self.has_ema and distinct_raw  # full-size tests save memory: raw weights = EMA weights
            self.raw_unet = original_unet(unet_params, seed + 3) if distinct else self.unet
            self.cond_stage_config = params["cond_stage_config"]

    def state_dict(self, *, loss_keys: bool = True) -> dict[str, torch.Tensor]:
        if not self.is_ldm:  # a standalone first stage: its own keys and its training loss
            sd = dict(self.first_stage.state_dict())
            if loss_keys:
                gen = torch.Generator().manual_seed(7)
                sd.update(
                    {
                        "loss.logvar": torch.zeros(()),
                        "loss.discriminator.main.0.weight": torch.randn(64, 3, 4, 4, generator=gen),
                        "loss.perceptual_loss.lin0.model.1.weight": torch.randn(1, 64, 1, 1, generator=gen),
                    }
                )
            return sd
        params = self.config["params"]
        sd = {"model.diffusion_model." + k: v for k, v in self.raw_unet.state_dict().items()}
        if self.has_ema:
            sd.update(ema_state(self.unet))
        first = {"first_stage_model." + k: v for k, v in self.first_stage.state_dict().items()}
        sd.update(first)
        if self.cond_stage_config == "__is_first_stage__":  # the aliased module is saved under both names
            sd.update({"cond_stage_model." + k[len("first_stage_model.") :]: v for k, v in first.items()})
        else:
            sd.update(cond_stage_state_dict(self.cond_stage_config, seed=4, prefix="cond_stage_model."))
        sd.update(schedule_buffers(params))
        if params.get("scale_by_std"):
            sd["scale_factor"] = torch.tensor(SCALE_BY_STD_FACTOR)
        return sd

    def write_checkpoint(self, path: str | Path, **kwargs) -> Path:
        path = Path(path)
        torch.save({"state_dict": self.state_dict(**kwargs), "global_step": 470000, "epoch": 3}, path)
        return path

    @property
    def scaling_factor(self) -> float:
        params = self.config["params"]
        if not self.is_ldm:
            return 1.0
        return SCALE_BY_STD_FACTOR if params.get("scale_by_std") else params.get("scale_factor", 1.0)


# ------------------------------------------------------------------------------------------------ inputs
def unet_inputs(config: Mapping[str, Any], batch: int = 2, seed: int = 1) -> dict[str, torch.Tensor]:
    """z_t (with concat channels), t and the context the original UNet takes (``x, timesteps, context``)."""
    unet = config["params"]["unet_config"]["params"]
    cond = config["params"]["cond_stage_config"]
    gen = torch.Generator().manual_seed(seed)
    side = 2 ** len(unet["channel_mult"])  # the lowest level is 2 × 2
    inputs = {
        "x": torch.randn(batch, unet["in_channels"], side, side, generator=gen),
        "timesteps": torch.tensor([17, 901][:batch]),
    }
    if unet.get("context_dim"):
        length = 1 if cond["target"] == CLASS else cond["params"].get("max_seq_len", 77)
        inputs["context"] = torch.randn(batch, length, unet["context_dim"], generator=gen)
    return inputs


def image_input(batch: int = 1, side: int = 64, seed: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ------------------------------------------------------------------------------------------------ samplers
class FakeLatentDiffusion:
    """What ``DDIMSampler`` / ``PLMSSampler`` read from a LatentDiffusion: the schedule, ``apply_model``.

    ``apply_model`` runs the original UNet (crossattn: ``c`` is the context) and records every input.
    """

    parameterization = "eps"
    device = "cpu"

    def __init__(self, unet: nn.Module, buffers: Mapping[str, torch.Tensor]):
        self.unet = unet
        self.num_timesteps = buffers["betas"].shape[0]
        for name, value in buffers.items():
            setattr(self, name, value)
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def apply_model(self, x, t, c):
        self.calls.append((x.clone(), t.clone()))
        return self.unet(x, t, context=c)


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def param_count(module: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in module.parameters())
