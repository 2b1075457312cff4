"""Semantic synthesis: y = a segmentation map, one-hot, rescaled to the latent and concatenated with z_t (§4.3.2).

With a :class:`~ldm_hub.LayoutPlanner` beside it, the model also serves captions (caption → planned boxes →
map) and layouts (boxes → map).
"""

from __future__ import annotations

import math

import torch

from ...data.shapes import LABELS
from ..base import Condition, Conditioner, TrainingParts, TrainingSetup
from ..inputs import as_layout_batch, as_prompt_list, check_layout
from ..semantic_map import SemanticMapEncoder


class SemanticConditioner(Conditioner):
    """A :class:`~ldm_hub.SemanticMapEncoder` (one-hot → bilinear rescale → 1×1 conv), optionally a planner."""

    mode = "semantic"
    key = "concat"
    inputs = ("segmentation",)
    pipeline_tag = "image-to-image"
    tab_title, api_name = "Semantic map → image", "semantic_to_image"
    training_unet_preset = "unet-semantic-shapes"
    tiled = True

    @classmethod
    def matches(cls, vae, unet, cond_encoder, tokenizer) -> bool:
        return isinstance(cond_encoder, SemanticMapEncoder)

    @property
    def plans_layouts(self) -> bool:
        """A layout planner turns prompts and boxes into this model's input map."""
        return self.layout_planner is not None

    @property
    def accepted_inputs(self) -> tuple[str, ...]:
        return ("prompt", "layout") + self.inputs if self.plans_layouts else self.inputs

    @property
    def tasks(self) -> tuple[str, ...]:
        # the planner's: a caption, or boxes (the text and layout conditioners' inputs), then the map itself
        return ("text", "layout", self.mode) if self.plans_layouts else (self.mode,)

    def plan(self, prompt, layout, num_images_per_prompt: int, generator, height, width) -> list:
        """``prompt`` or ``layout`` → index maps through the layout planner, one per image.

        Each of the B·n images of a prompt gets its own planned layout, drawn with its own generator when
        ``generator`` is a list, so the maps come back already repeated.
        """
        if prompt is not None and layout is not None:
            raise ValueError("pass one of `prompt`, `layout` and `segmentation`")
        n = num_images_per_prompt
        default = self.unet.config.sample_size * self.vae_scale_factor
        size = (default if width is None else width, default if height is None else height)
        if size != (default, default):  # boxes are fractions of the image: elsewhere shapes come out off-size
            raise ValueError(
                f"this model draws captions and layouts at its native size {default}x{default} only (the size it "
                f"was trained at), got {size[0]}x{size[1]}: leave height and width unset or pass {default}; a "
                "`segmentation` map of another size is drawn at that size"
            )
        if prompt is not None:
            expanded = [p for p in as_prompt_list(prompt) for _ in range(n)]
            if isinstance(generator, list) and len(generator) != len(expanded):
                raise ValueError(f"got {len(generator)} generators for a batch of {len(expanded)} images")
            layouts = self.layout_planner.plan(expanded, generator=generator)
        else:
            if isinstance(layout, torch.Tensor):
                raise ValueError("this model draws `layout` as a map: pass label/box dicts, not token ids")
            batch = as_layout_batch(layout)
            layouts = [check_layout(item, f"layout {i}, ") for i, item in enumerate(batch) for _ in range(n)]
        return self.layout_planner.rasterize(layouts, size)

    @torch.no_grad()
    def encode(self, segmentation, device) -> torch.Tensor:
        """τ_θ(y) for a segmentation map: (B, C, h, w) at the latent size, to stack onto z_t."""
        if segmentation is None:
            raise ValueError(
                "this is a semantic-synthesis model: pass `segmentation` (an index map: PIL 'L'/'P' image, "
                "numpy or integer tensor (B, H, W) of class ids, or a one-hot (B, K, H, W) tensor)"
            )
        encoder = self.cond_encoder
        prepared = encoder.prepare(segmentation)  # (B, H, W) ids or (B, K, H, W) one-hot
        height, width = prepared.shape[-2:]
        error = self.size_error("segmentation", height, width)
        if error:
            raise ValueError(error)
        latent_size = (height // self.vae_scale_factor, width // self.vae_scale_factor)
        if encoder.output_size(height, width) != latent_size:
            raise ValueError(
                f"the SemanticMapEncoder scales maps by {encoder.scale} but the autoencoder's latent is "
                f"1/{self.vae_scale_factor} of the image: the components do not fit together"
            )
        if encoder.config.out_channels != self.extra_channels:
            raise ValueError(
                f"the SemanticMapEncoder gives {encoder.config.out_channels} channels but the UNet takes "
                f"{self.extra_channels} besides z_t"
            )
        return encoder.encode(prepared.to(device)).to(self.dtype)  # (B, C, h, w)

    def prepare(self, y, *, num_images_per_prompt, generator, height, width, device, **_) -> Condition:
        segmentation, n = y.get("segmentation"), num_images_per_prompt
        if y.get("prompt") is not None or y.get("layout") is not None:
            if segmentation is not None:
                raise ValueError("pass one of `prompt`, `layout` and `segmentation`")
            segmentation = self.plan(y.get("prompt"), y.get("layout"), n, generator, height, width)
            n = 1  # one planned map per image already
        encoded = self.encode(segmentation, device)  # (B, C, h, w)
        concat = encoded.repeat_interleave(n, dim=0)  # (B·n, C, h, w)
        size = tuple(s * self.vae_scale_factor for s in concat.shape[-2:])
        return Condition(batch=concat.shape[0], concat=concat, size=size)

    # ------------------------------------------------------------------ training
    @classmethod
    def training_data(cls, setup: TrainingSetup) -> TrainingParts:
        """A segmentation column (``--segmentation-classes`` ids), or the layout column's boxes drawn as maps over
        the shapes categories."""
        config = setup.config
        column = config.segmentation_column
        if column and (column in setup.column_names or not setup.column_names):
            if config.segmentation_classes is None:
                raise ValueError(
                    f"--segmentation-classes is required with a segmentation column ({column!r}): the number "
                    "of class ids K"
                )
            return TrainingParts(columns={"segmentation": column})
        return TrainingParts(columns={"layout": config.layout_column}, segmentation_categories=list(LABELS))

    @classmethod
    def build_for_training(cls, setup: TrainingSetup) -> TrainingParts:
        """A SemanticMapEncoder (one-hot → bilinear halvings to the latent size → 1×1 conv to C) trained with ε_θ;
        with maps drawn from layouts, a :class:`~ldm_hub.LayoutPlanner` fitted on them serves captions and boxes."""
        config = setup.config
        parts = cls.training_data(setup)
        if parts.segmentation_categories is None:
            classes = config.segmentation_classes
        else:
            classes = len(parts.segmentation_categories) + 1  # 0 is the background
            parts.layout_planner = setup.fit_layout_planner(config.layout_column, parts.segmentation_categories)
        parts.cond_encoder = SemanticMapEncoder(
            num_classes=classes, out_channels=config.segmentation_channels, n_stages=int(math.log2(setup.factor)),
            method="bilinear", multiplier=0.5,
        )  # fmt: skip
        parts.train_encoder, parts.concat_channels = True, config.segmentation_channels
        return parts

    @classmethod
    def training_encode(cls, cond_encoder, y):
        return None, cond_encoder.encode_indices(y)  # τ_θ(class ids): (B, C, h, w)

    def training_inputs(self, batch, drop, *, train_encoder, device, autocast) -> dict:
        segmentation = batch["segmentation"].to(device)  # a concat condition is never dropped
        return self.encoder_inputs(segmentation, train_encoder=train_encoder, autocast=autocast)

    def sample_kwargs(self, batch) -> dict:
        return {"segmentation": batch["segmentation"]}

    def usage(self, latent, pixels):
        setup = f'segmentation = PIL.Image.new("L", ({pixels}, {pixels}), 0)  # an index map of class ids\n'
        return setup, "segmentation=segmentation, "
