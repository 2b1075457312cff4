"""y for semantic synthesis: a segmentation map → channels concatenated with z_t (paper §4.3.2, App. D.3).

The CompVis semantic-synthesis LDMs take a one-hot map of K = 182 classes at image resolution, shrink it to the
latent size with ``n_stages`` bilinear ×0.5 resizes (their ``SpatialRescaler``), and mix the K channels down to
3 with a learned 1×1 convolution; the result is stacked onto z_t as extra UNet input channels.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from ..hub_mixin import HubMixin
from ..models.layers import Conv2d

# Interpolation modes F.interpolate accepts for a 4-D map (the CompVis SpatialRescaler's list, minus 3-D ones).
INTERPOLATION_MODES = ("nearest", "bilinear", "bicubic", "area", "nearest-exact")
# PIL modes that hold one class index per pixel.
INDEX_IMAGE_MODES = ("L", "P", "I", "I;16")


class SemanticMapEncoder(HubMixin, ModelMixin, ConfigMixin):
    r"""One-hot segmentation (B, K, H, W) → (B, C, H·m^n, W·m^n): n resizes by m, then a 1×1 channel mapper.

    The CompVis ``SpatialRescaler`` with ``remap_output``: ``n_stages`` × ``F.interpolate(scale_factor=multiplier,
    mode=method)``, then ``channel_mapper`` (a 1×1 convolution K → C).

    Args:
        num_classes: K, the segmentation classes (182 for COCO-Stuff / the CompVis landscapes models).
        out_channels: C, channels stacked onto z_t (3).
        n_stages: number of resizes.
        method: interpolation mode of each resize (``"bilinear"``).
        multiplier: scale factor m of each resize (0.5: 256² → 64² in two stages, the f = 4 latent size).
        bias: whether the 1×1 channel mapper has a bias (the released models: no).

    Example:
        >>> import torch
        >>> encoder = SemanticMapEncoder(num_classes=5)
        >>> one_hot = encoder.one_hot(torch.randint(0, 5, (2, 32, 32)))
        >>> one_hot.shape, encoder(one_hot).shape
        (torch.Size([2, 5, 32, 32]), torch.Size([2, 3, 8, 8]))
    """

    @register_to_config
    def __init__(
        self,
        num_classes: int = 182,
        out_channels: int = 3,
        n_stages: int = 2,
        method: str = "bilinear",
        multiplier: float = 0.5,
        bias: bool = False,
    ):
        super().__init__()
        if method not in INTERPOLATION_MODES:
            raise ValueError(f"method={method!r} is not supported; choose one of {INTERPOLATION_MODES}")
        if n_stages < 0 or multiplier <= 0:
            raise ValueError(f"n_stages must be >= 0 and multiplier > 0, got {n_stages} and {multiplier}")
        self.channel_mapper = Conv2d(num_classes, out_channels, kernel_size=1, bias=bias)

    @property
    def scale(self) -> float:
        """Overall spatial scale m^n of the output relative to the input (0.25 for the released models)."""
        return self.config.multiplier**self.config.n_stages

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The spatial size the encoder gives for an H×W map (floor after every stage, as F.interpolate)."""
        for _ in range(self.config.n_stages):
            height, width = int(height * self.config.multiplier), int(width * self.config.multiplier)
        return height, width

    def forward(self, segmentation: torch.Tensor) -> torch.Tensor:
        """Encode a one-hot segmentation map for concatenation with z_t.

        | name           | paper                       | shape              |
        |----------------|-----------------------------|--------------------|
        | ``segmentation`` | y, one-hot semantic map   | (B, K, H, W)       |
        | ``x``          | y resized to the latent size | (B, K, h, w)      |
        | returned       | τ_θ(y), stacked onto z_t    | (B, C, h, w)       |

        Computes τ_θ(y) = W ∗ resize^n(y) with W a 1×1 convolution; the UNet then sees [z_t, τ_θ(y)] (the
        "concat" conditioning of paper §3.3 / App. D.3).
        """
        x = segmentation
        for _ in range(self.config.n_stages):
            x = F.interpolate(x, scale_factor=self.config.multiplier, mode=self.config.method)  # (B, K, H·m, W·m)
        return self.channel_mapper(x.to(self.channel_mapper.weight.dtype))  # (B, C, h, w)

    def encode_indices(self, class_ids: torch.LongTensor) -> torch.Tensor:
        """``forward(one_hot(class_ids))`` without building the (B, K, H, W) one-hot map.

        Every resize is linear and acts on each channel alike, so it commutes with the 1×1 channel mapper:
        W ∗ resize^n(onehot(y)) = resize^n(W ∗ onehot(y)) = resize^n(W[:, y]) (+ bias, which resizing keeps, as
        the interpolation weights sum to one). The full-resolution tensor is C channels instead of K (3 vs 182),
        so a 1024² map costs 12 MB instead of 760 MB; the result equals :meth:`forward` up to float rounding.

        Args:
            class_ids: (B, H, W) int64 class ids in [0, K) (checked by :meth:`prepare`).
        """
        weight = self.channel_mapper.weight[:, :, 0, 0]  # (C, K)
        x = F.embedding(class_ids, weight.t())  # (B, H, W, C): column y of W at every pixel
        x = x.permute(0, 3, 1, 2)  # (B, C, H, W)
        for _ in range(self.config.n_stages):
            x = F.interpolate(x, scale_factor=self.config.multiplier, mode=self.config.method)  # (B, C, H·m, W·m)
        if self.channel_mapper.bias is not None:
            x = x + self.channel_mapper.bias[:, None, None]  # (B, C, h, w)
        return x

    def encode(self, prepared: torch.Tensor) -> torch.Tensor:
        """τ_θ(y) from the output of :meth:`prepare`: class ids (B, H, W) or a one-hot map (B, K, H, W)."""
        if prepared.dtype.is_floating_point:
            return self(prepared.to(self.channel_mapper.weight.dtype))  # (B, C, h, w)
        return self.encode_indices(prepared)  # (B, C, h, w)

    # ------------------------------------------------------------------ y → tensor
    def one_hot(self, segmentation, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A segmentation in any form :meth:`prepare` accepts → a one-hot (B, K, H, W) tensor."""
        prepared = self.prepare(segmentation)
        if prepared.dtype.is_floating_point:
            return prepared.to(dtype)
        return F.one_hot(prepared, self.config.num_classes).permute(0, 3, 1, 2).to(dtype)  # (B, K, H, W)

    def prepare(self, segmentation) -> torch.Tensor:
        """Check a segmentation and return it as class ids (B, H, W) int64, or as given if one-hot (B, K, H, W).

        Accepts an index map — a PIL image of mode L / P (or a list of them), a numpy array or integer tensor of
        shape (H, W) or (B, H, W) holding class ids in [0, K) — or an already one-hot float tensor (B, K, H, W).
        Errors name the problem: a color image, a wrong class count, an id outside [0, K).
        """
        num_classes = self.config.num_classes
        if isinstance(segmentation, (PIL.Image.Image, list, tuple)):
            images = list(segmentation) if isinstance(segmentation, (list, tuple)) else [segmentation]
            if not images:
                raise ValueError("`segmentation` is an empty list")
            for i, image in enumerate(images):
                if not isinstance(image, PIL.Image.Image):
                    raise ValueError(f"`segmentation`[{i}] is a {type(image).__name__}, expected a PIL image")
                if image.mode not in INDEX_IMAGE_MODES:
                    raise ValueError(
                        f"`segmentation`[{i}] has mode {image.mode!r}: a segmentation must be an index map "
                        f"(one class id per pixel, PIL mode 'L' or 'P'), not a color image"
                    )
            if len({image.size for image in images}) != 1:
                raise ValueError(f"all segmentation maps must have the same size, got {[im.size for im in images]}")
            segmentation = np.stack([np.asarray(image).astype(np.int64) for image in images])  # (B, H, W)
        if isinstance(segmentation, np.ndarray):
            if not np.issubdtype(segmentation.dtype, np.integer):
                raise ValueError(f"a numpy segmentation must hold integer class ids, got dtype {segmentation.dtype}")
            segmentation = torch.from_numpy(segmentation.astype(np.int64))
        if not isinstance(segmentation, torch.Tensor):
            raise TypeError(
                "`segmentation` must be a PIL index image (mode L/P), a list of them, a numpy array or a tensor, "
                f"got {type(segmentation).__name__}"
            )
        if segmentation.dtype.is_floating_point:  # one-hot (B, K, H, W)
            if segmentation.ndim != 4:
                raise ValueError(
                    f"a float `segmentation` must be one-hot (B, K, H, W), got shape {tuple(segmentation.shape)}; "
                    "pass class indices as an integer tensor"
                )
            if segmentation.shape[1] != num_classes:
                raise ValueError(
                    f"one-hot `segmentation` has {segmentation.shape[1]} class channels, the model takes {num_classes}"
                )
            return segmentation
        if segmentation.dtype == torch.bool or segmentation.ndim not in (2, 3):
            raise ValueError(
                "an index `segmentation` must be integer class ids of shape (H, W) or (B, H, W), got "
                f"{segmentation.dtype} of shape {tuple(segmentation.shape)}"
            )
        class_ids = segmentation.long()
        if class_ids.ndim == 2:
            class_ids = class_ids[None]  # (1, H, W)
        low, high = int(class_ids.min()), int(class_ids.max())
        if low < 0 or high >= num_classes:
            bad = high if high >= num_classes else low
            raise ValueError(
                f"`segmentation` holds class id {bad}, outside the model's {num_classes} classes [0, {num_classes})"
            )
        return class_ids
