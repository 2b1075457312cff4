"""4× super-resolution: y = the low-resolution image, concatenated with z_t (paper §4.4)."""

from __future__ import annotations

import torch

from ..base import Condition, Conditioner, TrainingParts, TrainingSetup
from ..inputs import image_tensor

# Channels of the low-resolution image concatenated with z_t.
IMAGE_CHANNELS = 3


class SuperResolutionConditioner(Conditioner):
    """No condition encoder; the UNet takes the low-res image's channels beside z_t (its size is the latent's)."""

    mode = "superres"
    key = "concat"
    inputs = ("image",)
    pipeline_tag = "image-to-image"
    tab_title, api_name = "Super-resolution 4×", "super_resolution"
    training_unet_preset = "unet-superres-shapes"
    tiled = True
    training_columns = {"low_res": "low_res_column"}

    @classmethod
    def matches(cls, vae, unet, cond_encoder, tokenizer) -> bool:
        return cond_encoder is None and unet.config.in_channels > vae.config.latent_channels

    def low_res(self, image, device) -> torch.Tensor:
        """The low-res image y as a (B, 3, h, w) tensor in [-1, 1], h × w the latent size."""
        if image is None:
            raise ValueError("this is a super-resolution model: pass the low-resolution `image`")
        tensor = image_tensor(image, "image")
        if tensor.shape[1] != self.extra_channels:
            raise ValueError(f"`image` has {tensor.shape[1]} channels, the model takes {self.extra_channels}")
        h, w = tensor.shape[-2:]
        multiple = self.unet_downsampling
        if h % multiple or w % multiple:
            raise ValueError(
                f"low-resolution image size {w}x{h} is not supported: width and height must be multiples of "
                f"{multiple} (the UNet downsamples the latent {multiple}x)"
            )
        return tensor.to(device=device, dtype=self.dtype)

    def prepare(self, y, *, num_images_per_prompt, device, **_) -> Condition:
        low_res = self.low_res(y.get("image"), device)  # (B, 3, h, w)
        concat = low_res.repeat_interleave(num_images_per_prompt, dim=0)  # (B·n, 3, h, w)
        size = tuple(s * self.vae_scale_factor for s in concat.shape[-2:])
        return Condition(batch=concat.shape[0], concat=concat, size=size)

    @classmethod
    def build_for_training(cls, setup: TrainingSetup) -> TrainingParts:
        parts = super().build_for_training(setup)
        parts.concat_channels = IMAGE_CHANNELS  # the low-res RGB image, at the latent size
        return parts

    def training_inputs(self, batch, drop, *, train_encoder, device, autocast) -> dict:
        return {"concat": batch["low_res"].to(device)}  # a concat condition is never dropped

    def sample_kwargs(self, batch) -> dict:
        return {"image": batch["low_res"]}

    def usage(self, latent, pixels):
        setup = (
            f'low_res = PIL.Image.radial_gradient("L").convert("RGB").resize(({latent}, {latent}))  # any RGB image\n'
        )
        return setup, "image=low_res, "
