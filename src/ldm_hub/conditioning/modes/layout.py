"""Layout-to-image: y = bounding boxes as box tokens, τ_θ(y) = a transformer over them, cross-attended (§4.3.1)."""

from __future__ import annotations

import torch

from ...data.shapes import LABELS
from ..base import Condition, Conditioner, TrainingParts, TrainingSetup
from ..layout import LayoutTokenizer

# Layout tokenizer for layouts trained here: objects per layout (the shapes scenes have at most 3).
LAYOUT_MAX_OBJECTS = 8


class LayoutConditioner(Conditioner):
    """A :class:`~ldm_hub.LayoutTokenizer` + LDMBert over its tokens; guidance's unconditional input is the
    all-pad sequence."""

    mode = "layout"
    key = "crossattn"
    inputs = ("layout",)
    pipeline_tag = "text-to-image"  # the Hub has no layout task: a layout is a structured description
    tab_title, api_name = "Layout → image", "layout_to_image"
    training_unet_preset = "unet-layout-shapes"
    training_columns = {"layout": "layout_column"}

    @classmethod
    def matches(cls, vae, unet, cond_encoder, tokenizer) -> bool:
        return cond_encoder is not None and isinstance(tokenizer, LayoutTokenizer)

    @torch.no_grad()
    def tokens(self, layout, device) -> torch.Tensor:
        """A layout, a list of layouts or token ids (B, L) → checked token ids (B, L)."""
        if layout is None:
            raise ValueError(
                "this is a layout-to-image model: pass `layout`, e.g. "
                "[{'label': 'red circle', 'box': [0.1, 0.1, 0.5, 0.5]}] (corners in [0, 1], origin top left)"
            )
        length = self.tokenizer.sequence_length
        if isinstance(layout, torch.Tensor):  # already tokenised
            if layout.ndim != 2 or layout.shape[1] != length or layout.dtype != torch.long:
                raise ValueError(
                    f"a `layout` tensor must be int64 token ids (B, {length}), got "
                    f"{layout.dtype} of shape {tuple(layout.shape)}"
                )
            vocab = self.tokenizer.config.vocab_size
            if (
                layout.device.type != "meta"
                and layout.numel()
                and not (0 <= int(layout.min()) and int(layout.max()) < vocab)
            ):
                raise ValueError(
                    f"`layout` token ids must lie in [0, {vocab}) (the layout tokenizer's vocabulary), got "
                    f"[{int(layout.min())}, {int(layout.max())}]"
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
        return tokens

    @torch.no_grad()
    def prepare(self, y, *, guide, num_images_per_prompt, device, **_) -> Condition:
        tokens = self.tokens(y.get("layout"), device)  # (B, L)
        batch = tokens.shape[0]
        if guide:
            tokens = torch.cat([self.tokenizer.unconditional(batch, device), tokens])  # (2B, L)
        context = self.cond_encoder(tokens)[0].to(device, self.dtype)  # (B or 2B, L, d)
        context = context.repeat_interleave(num_images_per_prompt, dim=0)  # (B·n or 2·B·n, L, d)
        return Condition(batch=batch * num_images_per_prompt, context=context)

    # ------------------------------------------------------------------ training
    @classmethod
    def build_for_training(cls, setup: TrainingSetup) -> TrainingParts:
        """A LayoutTokenizer over the shapes categories and an LDMBert over its tokens, trained with ε_θ."""
        from ..text import LDMBertModel

        parts = super().build_for_training(setup)
        tokenizer = LayoutTokenizer(max_objects=LAYOUT_MAX_OBJECTS, categories=list(LABELS))
        encoder = LDMBertModel(
            vocab_size=tokenizer.config.vocab_size, max_position_embeddings=tokenizer.sequence_length,
            pad_token_id=tokenizer.pad_token_id, **setup.encoder_kwargs,
        )  # fmt: skip
        parts.tokenizer, parts.cond_encoder, parts.train_encoder = tokenizer, encoder, True
        parts.cross_attention_dim = encoder.config.hidden_size
        return parts

    @classmethod
    def training_encode(cls, cond_encoder, y):
        return cond_encoder(y)[0], None  # τ_θ(box tokens): (B, L, d)

    def training_inputs(self, batch, drop, *, train_encoder, device, autocast) -> dict:
        ids = self.tokenizer(list(batch["layout"]), device=device)  # (B, L)
        empty = self.tokenizer.unconditional(len(ids), device=device)
        ids = torch.where(drop.to(device)[:, None], empty, ids)
        return self.encoder_inputs(ids, train_encoder=train_encoder, autocast=autocast)

    def sample_kwargs(self, batch) -> dict:
        return {"layout": list(batch["layout"])}

    def usage(self, latent, pixels):
        return "", 'layout=[{"label": 0, "box": [0.1, 0.2, 0.5, 0.6]}], '
