"""Class-conditional: y = a class id, τ_θ(y) = its learned embedding as a length-1 context (paper §4.1)."""

from __future__ import annotations

import torch

from ..base import Condition, Conditioner
from ..class_label import ClassEmbedder


class ClassConditioner(Conditioner):
    """A :class:`~ldm_hub.ClassEmbedder`; guidance's unconditional input is the null class (when the model has
    one)."""

    mode = "class"
    key = "crossattn"
    inputs = ("class_labels",)
    tab_title, api_name = "Class → image", "class_to_image"

    @classmethod
    def matches(cls, vae, unet, cond_encoder, tokenizer) -> bool:
        return isinstance(cond_encoder, ClassEmbedder)

    @torch.no_grad()
    def prepare(self, y, *, guide, num_images_per_prompt, device, **_) -> Condition:
        class_labels = y.get("class_labels")
        if class_labels is None:
            raise ValueError("this is a class-conditional model: pass `class_labels` (an int or a list of ints)")
        labels = self.cond_encoder.prepare_labels(class_labels, device)  # (B,)
        batch = labels.shape[0]
        if guide:
            labels = torch.cat([self.cond_encoder.null_labels(batch, device), labels])  # (2B,)
        context = self.cond_encoder(labels).to(device, self.dtype)  # (B or 2B, 1, d)
        context = context.repeat_interleave(num_images_per_prompt, dim=0)
        return Condition(batch=batch * num_images_per_prompt, context=context)

    def usage(self, latent, pixels):
        return "", "class_labels=[0], "
