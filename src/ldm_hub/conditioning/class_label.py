"""τ_θ for class-conditional models: y ∈ {0 … K−1} → a length-1 cross-attention context (CompVis cin256).

The CompVis ImageNet LDMs embed the class label with a learned table and hand ε_θ the embedding as a context
sequence of length one, through the same cross-attention as text (paper §3.3, Eq. 3) — not added to the time
embedding. cin256-v2 has one extra row (index 1000), the "null" class trained with label dropout, which is the
unconditional input for classifier-free guidance.
"""

from __future__ import annotations

import numbers

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..hub_mixin import HubMixin


class ClassEmbedder(HubMixin, ModelMixin, ConfigMixin):
    r"""τ_θ(y) = E[y] as a (B, 1, d) context: the CompVis ``ClassEmbedder`` of the cin models.

    Args:
        num_classes: rows K of the embedding table (1000 for cin256; 1001 for cin256-v2, the null class included).
        embed_dim: d_τ, the context width (the UNet's ``cross_attention_dim``; 512 for the CompVis models).
        null_class: the id of the "no class" row used as the unconditional input for classifier-free guidance
            (1000 for cin256-v2), or ``None`` when the model was trained without one (no guidance possible).

    Example:
        >>> import torch
        >>> embedder = ClassEmbedder(num_classes=11, embed_dim=8, null_class=10)
        >>> labels = embedder.prepare_labels([3, 7])
        >>> embedder(labels).shape, embedder.null_labels(2).tolist()
        (torch.Size([2, 1, 8]), [10, 10])
    """

    @register_to_config
    def __init__(self, num_classes: int = 1000, embed_dim: int = 512, null_class: int | None = None):
        super().__init__()
        if null_class is not None and not 0 <= null_class < num_classes:
            raise ValueError(f"null_class={null_class} must be an id in [0, num_classes={num_classes})")
        self.embedding = nn.Embedding(num_classes, embed_dim)

    def forward(self, class_labels: torch.LongTensor) -> torch.Tensor:
        """Embed class ids as a one-token context.

        | name            | paper                         | shape      |
        |-----------------|-------------------------------|------------|
        | ``class_labels``| y (class ids)                 | (B,)       |
        | returned        | τ_θ(y), K and V of Eq. 3      | (B, 1, d_τ)|

        The ids are not range-checked here (that would read them back to the host); use
        :meth:`prepare_labels` on user input.
        """
        return self.embedding(class_labels)[:, None]  # (B, 1, d_τ)

    # ------------------------------------------------------------------ y → tensor
    def prepare_labels(self, class_labels, device: torch.device | str | None = None) -> torch.LongTensor:
        """An int, a list of ints or a 1-D integer tensor → a checked (B,) int64 tensor of class ids."""
        num_classes = self.config.num_classes
        if isinstance(class_labels, torch.Tensor):
            if class_labels.ndim == 0:
                class_labels = class_labels[None]
            if class_labels.ndim != 1 or class_labels.dtype.is_floating_point or class_labels.dtype == torch.bool:
                raise ValueError(
                    f"`class_labels` tensor must be 1-D integer ids, got {class_labels.dtype} of shape "
                    f"{tuple(class_labels.shape)}"
                )
            values = class_labels.tolist()
        else:
            values = [class_labels] if not isinstance(class_labels, (list, tuple)) else list(class_labels)
            for value in values:
                if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                    raise ValueError(f"class labels must be integer ids, got {value!r}")
            values = [int(v) for v in values]
        if not values:
            raise ValueError("`class_labels` is empty")
        for i, value in enumerate(values):
            if not 0 <= value < num_classes:
                raise ValueError(f"class id {value} (entry {i}) is out of range [0, {num_classes})")
        return torch.tensor(values, dtype=torch.long, device=device)

    def null_labels(self, batch: int, device: torch.device | str | None = None) -> torch.LongTensor:
        """(B,) filled with the null class: the unconditional input for classifier-free guidance."""
        if self.config.null_class is None:
            raise ValueError(
                "this class-conditional model has no null class (null_class=None), so classifier-free guidance "
                "is not possible: use guidance_scale=1"
            )
        return torch.full((batch,), self.config.null_class, dtype=torch.long, device=device)
