"""Inpainting: y = E((1 − m)·x) and the mask m, concatenated with z_t; the output keeps x outside m (§4.5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...models.first_stage import encode_mode
from ..base import Condition, Conditioner, _dtype_of
from ..inputs import MASK_CHANNELS, image_tensor, mask_tensor


class InpaintConditioner(Conditioner):
    """No condition encoder; the UNet takes E(masked image) and the mask beside z_t (in_channels = 2c + 1)."""

    mode = "inpaint"
    key = "concat"
    inputs = ("image", "mask_image")
    pipeline_tag = "image-to-image"
    tab_title, api_name = "Inpainting", "inpaint"

    @classmethod
    def matches(cls, vae, unet, cond_encoder, tokenizer) -> bool:
        latent = vae.config.latent_channels
        return cond_encoder is None and unet.config.in_channels - latent == latent + MASK_CHANNELS

    @torch.no_grad()
    def prepare(self, y, *, num_images_per_prompt, device, **_) -> Condition:
        """CompVis inpaint.py: x, m → the concat condition [E((1−m)·x), resize(m)], keeping x, m for compositing.

        As in the original, the masked image is built in [0, 1] and then mapped to [-1, 1] (so the hole is −1,
        black), the mask enters as 2m − 1 resized (nearest) to the latent, and the masked image's latent is E's
        raw output (VQ: before quantisation; KL: the posterior mode), unscaled.
        """
        image, mask_image = y.get("image"), y.get("mask_image")
        if image is None or mask_image is None:
            raise ValueError("this is an inpainting model: pass `image` and `mask_image` (white = area to fill)")
        x = image_tensor(image, "image")  # (B, 3, H, W) in [-1, 1]
        mask = mask_tensor(mask_image)  # (B or 1, 1, H, W)
        height, width = x.shape[-2:]
        if tuple(mask.shape[-2:]) != (height, width):
            raise ValueError(
                f"`mask_image` size {mask.shape[-1]}x{mask.shape[-2]} differs from `image` size {width}x{height}"
            )
        if mask.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"got {mask.shape[0]} masks for {x.shape[0]} images (pass one mask, or one per image)")
        if x.shape[1] != self.vae.config.in_channels:
            raise ValueError(f"`image` has {x.shape[1]} channels, the autoencoder takes {self.vae.config.in_channels}")
        error = self.size_error("image", height, width)
        if error:
            raise ValueError(error)
        vae_dtype = _dtype_of(self.vae)
        x = x.to(device=device, dtype=vae_dtype)
        mask = mask.to(device=device, dtype=vae_dtype).expand(x.shape[0], -1, -1, -1)  # (B, 1, H, W)
        masked = (1 - mask) * (x + 1) - 1  # ((1 − m)·(x+1)/2)·2 − 1: the hole is −1   (B, 3, H, W)
        c_image = encode_mode(self.vae, masked)  # (B, c, h, w)
        c_mask = F.interpolate(mask * 2 - 1, size=c_image.shape[-2:])  # (B, 1, h, w)
        condition = torch.cat([c_image, c_mask], dim=1).to(self.dtype)  # (B, c + 1, h, w)
        if condition.shape[1] != self.extra_channels:
            raise ValueError(
                f"the inpainting condition has {condition.shape[1]} channels but the UNet takes "
                f"{self.extra_channels} besides z_t"
            )
        n = num_images_per_prompt
        concat = condition.repeat_interleave(n, dim=0)  # (B·n, c + 1, h, w)
        keep = (x.repeat_interleave(n, dim=0), mask.repeat_interleave(n, dim=0))
        return Condition(batch=concat.shape[0], concat=concat, size=(height, width), keep=keep)

    def finish(self, images, condition):
        x, mask = condition.keep
        original = (x.to(images.dtype) / 2 + 0.5).clamp(0, 1)  # (B, 3, H, W) in [0, 1]
        mask = mask.to(images.dtype)
        return (1 - mask) * original + mask * images  # keep x outside the mask, x̂ inside

    def usage(self, latent, pixels):
        setup = (
            f'image = PIL.Image.radial_gradient("L").convert("RGB").resize(({pixels}, {pixels}))\n'
            f'mask = PIL.Image.new("L", ({pixels}, {pixels}), 0)\n'
            f"mask.paste(255, ({pixels // 4}, {pixels // 4}, {3 * pixels // 4}, {3 * pixels // 4}))"
            "  # white = fill\n"
        )
        return setup, "image=image, mask_image=mask, "
