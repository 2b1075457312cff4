"""Unconditional: no y; ε_θ(z_t, t) (paper §4.1)."""

from __future__ import annotations

from ..base import Condition, Conditioner


class UnconditionalConditioner(Conditioner):
    """No condition encoder and a UNet that takes z_t alone; ``batch_size`` says how many images."""

    mode = "unconditional"
    key = None
    tab_title, api_name = "Unconditional", "unconditional"
    training_unet_preset = "unet-unconditional-shapes"

    @classmethod
    def matches(cls, vae, unet, cond_encoder, tokenizer) -> bool:
        return cond_encoder is None and unet.config.in_channels == vae.config.latent_channels

    def prepare(self, y, *, num_images_per_prompt, batch_size, **_) -> Condition:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
        return Condition(batch=batch_size * num_images_per_prompt)

    def sample_kwargs(self, batch) -> dict:
        return {"batch_size": len(batch["index"])}
