"""LDMPipeline: one sampling loop for every conditioning mode of the Latent Diffusion paper.

Data flows one way: y → (tokenizer → τ_θ) → scheduler loop over ε_θ(z_t, t, τ_θ(y)) → decoder D(z_0).
The conditioning mode is read off the components, never passed as a flag:

======================  ==========================  ===========================================
mode                    components                  how y reaches ε_θ
======================  ==========================  ===========================================
``"text"``              tokenizer + cond_encoder    cross-attention context τ_θ(y), shape (B, L, d)
``"superres"``          no encoder, UNet in_ch > c  low-res image concatenated with z_t
``"unconditional"``     no encoder, UNet in_ch = c  nothing
======================  ==========================  ===========================================
"""

from __future__ import annotations

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
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from ..convert.diffusers_format import COMPONENT_RENAMES, load_component
from ..loading import ModelFileError, atomic_directory, read_json


class _EmptyFp32ModulesFilter(logging.Filter):
    """diffusers 0.42 warns on every ``model.to(dtype)`` even when no module must stay in fp32 (the list
    it prints is empty); drop exactly that message, keep every other one."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("There are modules in") and "kept in float32: []." in message)


logging.getLogger("diffusers.models.modeling_utils").addFilter(_EmptyFp32ModulesFilter())

# diffusers pipelines whose VQ first stage is used without a scale factor, whatever its config says.
_UNSCALED_DIFFUSERS_PIPELINES = {"LDMSuperResolutionPipeline", "LDMPipeline"}
_OUTPUT_TYPES = ("pil", "np", "pt", "latent")


class LDMPipeline(DiffusionPipeline):
    r"""Latent diffusion sampling for text-to-image, 4× super-resolution and unconditional models.

    Components: ``vae`` (KL or VQ autoencoder, E and D), ``unet`` (ε_θ), ``scheduler``, ``cond_encoder``
    (τ_θ, or None) and ``tokenizer`` (or None). The conditioning mode follows from them (see
    :attr:`conditioning`).

    Example:
        ```py
        >>> from ldm_hub import LDMPipeline
        >>> pipe = LDMPipeline.from_pretrained("path/or/hub-id")  # doctest: +SKIP
        >>> image = pipe("a red circle and a blue square", num_inference_steps=50,
        ...              guidance_scale=3.0, generator=torch.Generator().manual_seed(0)).images[0]  # doctest: +SKIP
        ```
    """

    model_cpu_offload_seq = "cond_encoder->unet->vae"
    _optional_components = ["cond_encoder", "tokenizer"]

    def __init__(self, vae, unet, scheduler, cond_encoder=None, tokenizer=None):
        super().__init__()
        self.register_modules(vae=vae, unet=unet, scheduler=scheduler, cond_encoder=cond_encoder, tokenizer=tokenizer)

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
        """``"text"``, ``"superres"`` or ``"unconditional"``, from the components (never a user flag)."""
        if self.cond_encoder is not None:
            return "text"
        if self.unet.config.in_channels > self.latent_channels:
            return "superres"
        return "unconditional"

    @property
    def text_max_length(self) -> int:
        """Token sequence length: the encoder's position table (``max_position_embeddings``), or the
        tokenizer's ``model_max_length`` when that is shorter (never a literal)."""
        lengths = [getattr(self.cond_encoder.config, "max_position_embeddings", None),
                   getattr(self.tokenizer, "model_max_length", None)]
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
        return hidden.to(self.unet.dtype)

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
        dtype = self.unet.dtype
        context = prompt_embeds.to(device, dtype).repeat_interleave(num_images_per_prompt, dim=0)
        if guide:
            uncond = negative_prompt_embeds.to(device, dtype).repeat_interleave(num_images_per_prompt, dim=0)
            context = torch.cat([uncond, context])  # (2B, L, d): one batched UNet call per step
        return batch, context

    def _prepare_low_res(self, image, device) -> torch.Tensor:
        """The low-res image y for super-resolution as a (B, 3, h, w) tensor in [-1, 1]."""
        if image is None:
            raise ValueError("this is a super-resolution model: pass the low-resolution `image`")
        images = image if isinstance(image, list) else [image]
        if all(isinstance(im, PIL.Image.Image) for im in images):
            for i, im in enumerate(images):
                if im.mode != "RGB":
                    raise ValueError(
                        f"super-resolution `image`[{i}] has mode {im.mode!r}; an RGB image is required "
                        "(use image.convert('RGB'))"
                    )
            if len({im.size for im in images}) != 1:
                raise ValueError(f"all images must have the same size, got {[im.size for im in images]}")
            array = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in images])  # (B, h, w, 3)
            tensor = torch.from_numpy(array).permute(0, 3, 1, 2) * 2.0 - 1.0
        elif isinstance(image, torch.Tensor):
            tensor = image[None] if image.ndim == 3 else image
            if tensor.ndim != 4:
                raise ValueError(f"`image` tensor must be (B, 3, h, w) in [-1, 1], got shape {tuple(image.shape)}")
        else:
            raise TypeError(f"`image` must be a PIL image, a list of them or a tensor, got {type(image).__name__}")
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
        return tensor.to(device=device, dtype=self.unet.dtype)

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
    ):
        r"""Sample images: z_T ~ N(0, I), then z_{t-1} = scheduler.step(ε_θ(z_t, t, y)), then x = D(z_0 / s).

        Args:
            prompt: text y for a text-to-image model (τ_θ(y) is the cross-attention context).
            negative_prompt: text whose encoding replaces ``""`` as the unconditional input for guidance.
            image: low-resolution image(s) for a super-resolution model (PIL RGB, or a (B, 3, h, w) tensor in
                [-1, 1]); the output is ``vae_scale_factor`` times larger.
            height, width: output size in pixels; multiples of ``vae_scale_factor * unet_downsampling``.
                Default: ``unet.config.sample_size * vae_scale_factor``.
            num_inference_steps: scheduler steps.
            guidance_scale: classifier-free guidance w: ε = ε_u + w (ε_c − ε_u); 1.0 disables it.
            eta: η of DDIM (0 deterministic); passed to schedulers whose ``step`` takes it.
            num_images_per_prompt: images per prompt (or per low-res image).
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
            raise ValueError(f"`callback_on_step_end_tensor_inputs` may name 'latents' and 'noise_pred', not {unknown}")
        text_given = prompt is not None or prompt_embeds is not None or negative_prompt is not None
        if mode != "text" and text_given:
            raise ValueError(
                f"this model has no text encoder (conditioning {mode!r}): `prompt`/`negative_prompt`/"
                "`prompt_embeds` cannot be used"
            )
        if mode != "superres" and image is not None:
            raise ValueError(f"`image` is only used by super-resolution models; this one is {mode!r}")

        guide = mode == "text" and guidance_scale != 1.0
        context, concat = None, None
        if mode == "text":
            batch, context = self._prepare_text_context(
                prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, guide, num_images_per_prompt, device
            )
        elif mode == "superres":
            low_res = self._prepare_low_res(image, device)
            batch = low_res.shape[0]
            concat = low_res.repeat_interleave(num_images_per_prompt, dim=0)  # (B, 3, h, w)
            height, width = (s * self.vae_scale_factor for s in low_res.shape[-2:])
        else:
            if not isinstance(batch_size, int) or batch_size < 1:
                raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
            batch = batch_size
        total = batch * num_images_per_prompt

        default = self.unet.config.sample_size * self.vae_scale_factor
        height = default if height is None else height
        width = default if width is None else width
        self._check_size(height, width)
        if isinstance(generator, list) and len(generator) != total:
            raise ValueError(f"got {len(generator)} generators for a batch of {total} images")

        # z_T ~ N(0, I), scaled by the scheduler's initial sigma.
        shape = (total, self.latent_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        dtype = self.unet.dtype
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"`latents` has shape {tuple(latents.shape)}, expected {shape} for these settings")
        latents = latents.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        step_kwargs = {}
        step_params = set(inspect.signature(self.scheduler.step).parameters)
        if "eta" in step_params:
            step_kwargs["eta"] = eta
        if "generator" in step_params:
            step_kwargs["generator"] = generator

        timesteps = self.scheduler.timesteps
        for i, t in enumerate(self.progress_bar(timesteps)):
            model_input = torch.cat([latents] * 2) if guide else latents  # (B or 2B, c, h, w)
            model_input = self.scheduler.scale_model_input(model_input, t)
            if concat is not None:
                model_input = torch.cat([model_input, concat], dim=1)  # (B, c + 3, h, w)
            noise_pred = self.unet(model_input, t, encoder_hidden_states=context).sample
            if guide:
                noise_uncond, noise_cond = noise_pred.chunk(2)
                noise_pred = noise_uncond + guidance_scale * (noise_cond - noise_uncond)
            latents = self.scheduler.step(noise_pred, t, latents, **step_kwargs).prev_sample
            if callback_on_step_end is not None:
                local = {"latents": latents, "noise_pred": noise_pred}
                out = callback_on_step_end(self, i, t, {k: local[k] for k in tensor_inputs}) or {}
                latents = out.get("latents", latents)

        if output_type == "latent":
            images = latents
        else:
            images = self.decode_latents(latents)
            if output_type != "pt":
                images = images.cpu().permute(0, 2, 3, 1).float().numpy()
                if output_type == "pil":
                    images = self.numpy_to_pil(images)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """x = D(z / s) mapped from [-1, 1] to [0, 1]; s is the autoencoder's ``scaling_factor``."""
        latents = latents / self.vae.config.scaling_factor  # (B, c, h, w)
        image = self.vae.decode(latents.to(self.vae.dtype)).sample  # (B, 3, H, W)
        return (image / 2 + 0.5).clamp(0, 1)

    # ------------------------------------------------------------------ loading and saving
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
    ) -> "LDMPipeline":
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
        """
        allowed = {"vae", "unet", "scheduler", "cond_encoder", "tokenizer"}
        unknown = set(components) - allowed
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {sorted(unknown)}; components are {sorted(allowed)}")
        folder = _resolve_folder(
            pretrained_model_name_or_path,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
        )
        index = read_json(folder / "model_index.json")
        pipeline_class = index.get("_class_name")
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
        return cls(**loaded)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Write the pipeline (model_index.json, a folder per component, safetensors) atomically."""
        with atomic_directory(save_directory) as tmp:
            super().save_pretrained(tmp, **kwargs)


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def _resolve_folder(name_or_path, *, revision, cache_dir, token, local_files_only) -> Path:
    """A local folder as is; a Hub repo id downloaded (or read from the cache) with the official client."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists() or not _REPO_ID.match(str(name_or_path)):
        raise ModelFileError(f"model folder not found: {name_or_path}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    kwargs = {"revision": revision, "cache_dir": cache_dir, "token": token}
    if local_files_only is not None:
        kwargs["local_files_only"] = local_files_only
    try:
        return Path(snapshot_download(str(name_or_path), **kwargs))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as e:
        where = f"{name_or_path}" + (f" at revision {revision!r}" if revision else "")
        raise ModelFileError(
            f"{name_or_path!r} is not a local folder and could not be fetched from the Hub ({where}): "
            f"{type(e).__name__}: {e}"
        ) from None
