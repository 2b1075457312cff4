"""The Conditioner: everything one conditioning mode decides, in one object.

A latent diffusion model is conditioned on y in one of a few ways (CompVis' ``DiffusionWrapper``
``conditioning_key``): τ_θ(y) as the cross-attention context (``"crossattn"``), y's channels stacked onto z_t
(``"concat"``), or not at all. A :class:`Conditioner` subclass per mode owns, for its mode:

- which ``__call__`` arguments carry y (:attr:`Conditioner.inputs`) and the error for another mode's input;
- validating them (through the shared readers of :mod:`ldm_hub.conditioning.inputs`) and turning y into a
  :class:`Condition` — the context or channels ε_θ consumes, with the unconditional input for guidance;
- what is done to the decoded images (inpainting composites the kept pixels back);
- what training reads from a dataset row and how it drops y for guidance (``training_*``);
- what the model card, the Hub's pipeline tag and the demo tab say about it.

The pipeline, training, evaluation, the Hub code and the demo ask the conditioner; none of them switches on the
mode's name. :func:`ldm_hub.conditioning.conditioner_for` picks the conditioner from the components.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..models.first_stage import downsampling_factor


@dataclass
class Condition:
    """y prepared for ε_θ, for ``batch`` images (``num_images_per_prompt`` already applied).

    ``context``: the cross-attention context (batch, L, d), or (2·batch, L, d) with the unconditional half
    first when guided. ``concat``: channels stacked onto z_t, (batch, C_y, h, w). ``size``: the output (H, W)
    the condition fixes (a map or image aligned with z_t), else None. ``keep``: what :meth:`Conditioner.finish`
    needs after decoding (inpainting: the image x and the mask m).
    """

    batch: int
    context: torch.Tensor | None = None
    concat: torch.Tensor | None = None
    size: tuple[int, int] | None = None
    keep: tuple[torch.Tensor, ...] | None = None


@dataclass
class TrainingSetup:
    """What ``ldm-hub train ldm`` hands a conditioner to build its side of a new model (conditioning imports
    nothing of training: the data helpers come in as callables)."""

    config: Any  # LDMTrainingConfig
    dataset: Any
    output: Path
    factor: int  # f of the frozen first stage
    encoder_kwargs: dict  # the LDMBert size that goes with the UNet preset
    column_names: list[str]  # the dataset's columns ([] for a streaming dataset that does not say)
    caption_vocabulary: Callable[[str], list[str]]  # column → its words
    fit_layout_planner: Callable[[str, list[str]], Any]  # (column, labels) → a fitted LayoutPlanner
    bert_vocab: Callable[[], str | None]  # bert-base-uncased's vocab.txt, when installed


@dataclass
class TrainingParts:
    """A conditioner's side of a model to train: τ_θ (trained with ε_θ or frozen), its tokenizer, a planner, and
    what the UNet must take (channels beside z_t, the cross-attention width)."""

    tokenizer: Any = None
    cond_encoder: Any = None
    train_encoder: bool = False
    layout_planner: Any = None
    concat_channels: int = 0
    cross_attention_dim: int | None = None
    columns: dict[str, str] = field(default_factory=dict)  # row key → dataset column read beside the image
    segmentation_categories: list[str] | None = None  # draw the map from the layout with these categories


def _dtype_of(module: torch.nn.Module) -> torch.dtype:
    """The dtype of a model's first floating-point parameter (diffusers' ``ModelMixin.dtype`` walks every
    submodule on each access, milliseconds per call)."""
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


# The __call__ arguments of the text conditioner: the other modes' errors for them say there is no text encoder.
TEXT_INPUTS = ("prompt", "negative_prompt", "prompt_embeds", "negative_prompt_embeds")


class Conditioner:
    """One conditioning mode over a pipeline's components (see the module docstring)."""

    #: The mode's name (``pipe.conditioning``).
    mode: ClassVar[str]
    #: How y reaches ε_θ: "crossattn", "concat" or None.
    key: ClassVar[str | None]
    #: The ``__call__`` arguments that carry y.
    inputs: ClassVar[tuple[str, ...]] = ()
    #: The Hub's task for models of this mode (model card metadata).
    pipeline_tag: ClassVar[str] = "unconditional-image-generation"
    #: The demo's tab title and its API endpoint name.
    tab_title: ClassVar[str]
    api_name: ClassVar[str]
    #: Whether the condition is a map aligned with z_t, so an image can be sampled in overlapping tiles.
    tiled: ClassVar[bool] = False
    #: The UNet size ``ldm-hub train ldm`` builds for this mode without ``--model`` (None: not trainable here).
    training_unet_preset: ClassVar[str | None] = None
    #: What a training run of this mode reads from a row beside the image: {row key: config field naming the column}.
    training_columns: ClassVar[dict[str, str]] = {}

    def __init__(self, vae, unet, cond_encoder=None, tokenizer=None, layout_planner=None):
        self.vae, self.unet = vae, unet
        self.cond_encoder, self.tokenizer, self.layout_planner = cond_encoder, tokenizer, layout_planner

    @classmethod
    def matches(cls, vae, unet, cond_encoder, tokenizer) -> bool:
        """Whether these components are a model of this mode (see :func:`~ldm_hub.conditioning.conditioner_for`)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ geometry read off the components
    @property
    def vae_scale_factor(self) -> int:
        """f = H/h."""
        return downsampling_factor(self.vae)

    @property
    def unet_downsampling(self) -> int:
        """The UNet's total downsampling of the latent (2 per level after the first)."""
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this: f × the UNet's downsampling."""
        return self.vae_scale_factor * self.unet_downsampling

    @property
    def extra_channels(self) -> int:
        """The UNet's input channels beside z_t (the concat condition's)."""
        return self.unet.config.in_channels - self.vae.config.latent_channels

    @property
    def dtype(self) -> torch.dtype:
        return _dtype_of(self.unet)

    def size_error(self, what: str, height: int, width: int) -> str | None:
        """The error for a ``what`` of ``width``×``height`` pixels that the models cannot take, else None."""
        if height % self.size_multiple or width % self.size_multiple:
            return (
                f"{what} size {width}x{height} is not supported: width and height must be multiples of "
                f"{self.size_multiple} (autoencoder factor {self.vae_scale_factor} x UNet downsampling "
                f"{self.unet_downsampling})"
            )
        return None

    # ------------------------------------------------------------------ what the mode takes
    @property
    def accepted_inputs(self) -> tuple[str, ...]:
        """The ``__call__`` arguments that carry y for this model."""
        return self.inputs

    @property
    def tasks(self) -> tuple[str, ...]:
        """What this model generates from (the demo and ``ldm-hub evaluate`` read this)."""
        return (self.mode,)

    @property
    def guidance_supported(self) -> bool:
        """Classifier-free guidance needs an unconditional input: cross-attention modes have one (``""``, the
        all-pad layout, the null class); concatenated maps have none."""
        return self.key == "crossattn"

    def check_inputs(self, given: dict[str, Any]) -> None:
        """Inputs another mode takes are an error naming this model's mode and what it takes."""
        takes = self.accepted_inputs
        stray = [name for name, value in given.items() if value is not None and name not in takes]
        if not stray:
            return
        names = ", ".join(f"`{name}`" for name in stray)
        if set(stray) & set(TEXT_INPUTS):
            if "prompt" in takes:
                raise ValueError(
                    f"{names} cannot be used with this model: it reads a `prompt` only through its layout planner "
                    f"(caption → boxes → {self.mode} map), with no text encoder"
                )
            raise ValueError(
                f"this model has no text encoder (conditioning {self.mode!r}): `prompt`/`negative_prompt`/"
                "`prompt_embeds` cannot be used"
            )
        wanted = ", ".join(f"`{name}`" for name in takes) or "no condition (use `batch_size`)"
        raise ValueError(
            f"{names} cannot be used with this model: its conditioning is {self.mode!r}, which takes {wanted}"
        )

    # ------------------------------------------------------------------ y → Condition → images
    def prepare(
        self, y: dict[str, Any], *, guide: bool, num_images_per_prompt: int, batch_size: int, generator, height, width,
        device,
    ) -> Condition:  # fmt: skip
        """y (the mode's ``__call__`` arguments, by name) → the :class:`Condition` ε_θ consumes."""
        raise NotImplementedError

    def finish(self, images: torch.Tensor, condition: Condition) -> torch.Tensor:
        """Decoded images (B, 3, H, W) in [0, 1] → the output (inpainting keeps the pixels outside the mask)."""
        return images

    # ------------------------------------------------------------------ training
    @classmethod
    def training_data(cls, setup: TrainingSetup) -> TrainingParts:
        """What a training row of this mode needs beside the image (``columns``; fine-tuning reads only this)."""
        columns = {key: getattr(setup.config, field_name) for key, field_name in cls.training_columns.items()}
        return TrainingParts(columns=columns)

    @classmethod
    def build_for_training(cls, setup: TrainingSetup) -> TrainingParts:
        """The condition side of a new model of this mode (τ_θ, tokenizer, extra UNet inputs) and its columns."""
        return cls.training_data(setup)

    @classmethod
    def training_encode(cls, cond_encoder, y) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """τ_θ(y) inside the training forward, for a condition encoder trained with ε_θ: (context, concat)."""
        raise NotImplementedError(f"{cls.__name__} trains no condition encoder")

    def encoder_inputs(self, y, *, train_encoder: bool, autocast) -> dict:
        """The :class:`~ldm_hub.models.denoiser.Denoiser` inputs for encoder inputs ``y``: τ_θ run inside the
        training forward when it is trained, else once here under ``no_grad`` (a frozen encoder)."""
        if train_encoder:
            return {"encode": self.training_encode, "y": y}
        with torch.no_grad(), autocast():
            context, concat = self.training_encode(self.cond_encoder, y)
        return {"context": context, "concat": concat}

    def training_inputs(self, batch: dict, drop: torch.Tensor, *, train_encoder: bool, device, autocast) -> dict:
        """The :class:`~ldm_hub.models.denoiser.Denoiser` keyword inputs for a training batch, y replaced by its
        unconditional input where ``drop`` (B,) is True (concat conditions are never dropped)."""
        return {}

    def sample_kwargs(self, batch: dict) -> dict:
        """``__call__`` keyword arguments that condition on a collated batch's y (sample grids, evaluation)."""
        return {}

    # ------------------------------------------------------------------ what cards and tabs say
    def usage(self, latent: int, pixels: int) -> tuple[str, str]:
        """(setup lines, call arguments) of the model card's usage snippet for a ``pixels``² output."""
        return "", ""
