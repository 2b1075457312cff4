"""The conditioning modes of the LDM paper, one :class:`~ldm_hub.conditioning.base.Conditioner` each.

The table is CompVis' ``DiffusionWrapper`` taxonomy: how y reaches ε_θ (``key``) and what the components are.

===================  ============  ======================================  ===========================================
mode                 key           components                              y → ε_θ
===================  ============  ======================================  ===========================================
``"class"``          crossattn     ClassEmbedder                           learned embedding, a length-1 context
``"semantic"``       concat        SemanticMapEncoder (+ LayoutPlanner)    encoded one-hot map stacked on z_t
``"layout"``         crossattn     LayoutTokenizer + LDMBertModel          τ_θ(box tokens) as the context
``"text"``           crossattn     text tokenizer + τ_θ (or none: embeds)  τ_θ(caption) as the context
``"inpaint"``        concat        no encoder, UNet in_ch = 2c + 1         E(masked image) and the mask stacked on z_t
``"superres"``       concat        no encoder, UNet in_ch = c + 3          the low-res image stacked on z_t
``"unconditional"``  None          no encoder, UNet in_ch = c              nothing
===================  ============  ======================================  ===========================================

:func:`conditioner_for` tries them in this order (the first whose ``matches`` holds wins).
"""

from __future__ import annotations

from ..base import Conditioner
from .class_label import ClassConditioner
from .inpaint import InpaintConditioner
from .layout import LayoutConditioner
from .semantic import SemanticConditioner
from .superres import SuperResolutionConditioner
from .text import TextConditioner
from .unconditional import UnconditionalConditioner

CONDITIONERS: tuple[type[Conditioner], ...] = (
    ClassConditioner,
    SemanticConditioner,
    LayoutConditioner,
    TextConditioner,
    InpaintConditioner,
    SuperResolutionConditioner,
    UnconditionalConditioner,
)
MODES: tuple[str, ...] = tuple(c.mode for c in CONDITIONERS)


def conditioner_class(mode: str) -> type[Conditioner]:
    """The conditioner of a mode named by a user (``ldm-hub train --conditioning``), with a clear error."""
    for conditioner in CONDITIONERS:
        if conditioner.mode == mode:
            return conditioner
    raise ValueError(f"unknown conditioning mode {mode!r}; choose one of {list(MODES)}")


def conditioner_for(vae, unet, cond_encoder=None, tokenizer=None, layout_planner=None) -> Conditioner:
    """The conditioner of these components: read off them, never a flag.

    With a condition encoder: its kind (class embedding, semantic map) or, for a sequence encoder, the
    tokenizer's (box tokens → layout, else text). Without one: the UNet's input channels beside z_t (none,
    E(masked image) + mask, or a low-res image), or a cross-attention UNet (text, from precomputed embeddings).
    """
    if layout_planner is not None and not SemanticConditioner.matches(vae, unet, cond_encoder, tokenizer):
        raise ValueError(
            "a `layout_planner` draws maps for a semantic-map model: `cond_encoder` must be a "
            f"SemanticMapEncoder, got {type(cond_encoder).__name__}"
        )
    for conditioner in CONDITIONERS:
        if conditioner.matches(vae, unet, cond_encoder, tokenizer):
            return conditioner(vae, unet, cond_encoder, tokenizer, layout_planner)
    raise ValueError(
        f"cannot tell the conditioning of these components: cond_encoder {type(cond_encoder).__name__}, "
        f"UNet in_channels {unet.config.in_channels}, autoencoder latent_channels {vae.config.latent_channels}"
    )


__all__ = ["CONDITIONERS", "MODES", "conditioner_class", "conditioner_for", *(c.__name__ for c in CONDITIONERS)]
