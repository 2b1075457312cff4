"""One validator per input kind: boxes and layouts, prompts, images, masks.

The pipeline, the training data reader, the demo and the CLI all check y through these functions, so a rule
(what a valid box is, which image forms are taken) is written once. Each error names the input and, where
given, the position (``where``: "layout 2, object 0: ", "row 7, column 'layout': ").

The box rule: ``[x0, y0, x1, y1]`` (corners as fractions of the image, origin top left) is valid iff
0 ≤ x0 < x1 ≤ 1 and 0 ≤ y0 < y1 ≤ 1.

Imports: torch, numpy, PIL only.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import PIL.Image
import torch

# The keys of one layout object.
OBJECT_KEYS = ("label", "box")
# The inpainting mask: the threshold that binarises it (CompVis inpaint.py), its channel count.
MASK_THRESHOLD = 0.5
MASK_CHANNELS = 1
# How far outside [-1, 1] an image tensor's values may reach (a resampled image overshoots a little); beyond it
# the tensor is in another range ([0, 255], ...) and is refused.
IMAGE_RANGE_TOLERANCE = 0.1


# ---------------------------------------------------------------------------------------------- boxes, layouts
class BoxError(ValueError):
    """A box that breaks the box rule; ``reason`` says how ("form", "outside", "inverted" or "empty"), so a
    front end can word it for its own users while the rule stays :func:`check_box`'s."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def check_box(box, where: str = "") -> tuple[float, float, float, float]:
    """The one box rule: four numbers with 0 ≤ x0 < x1 ≤ 1 and 0 ≤ y0 < y1 ≤ 1 → floats, else a ValueError.

    Example:
        >>> check_box([0, 0.25, 0.5, 1])
        (0.0, 0.25, 0.5, 1.0)
        >>> check_box([0.5, 0, 0.5, 1], "object 0: ")
        Traceback (most recent call last):
        ...
        ValueError: object 0: box [0.5, 0, 0.5, 1] has zero width or height
    """
    if (
        not isinstance(box, (list, tuple))
        or len(box) != 4
        or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in box)
    ):
        raise BoxError(f"{where}box {box!r} must be four numbers [x0, y0, x1, y1]", "form")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)):  # also catches NaN
        raise BoxError(
            f"{where}box {list(box)} is outside [0, 1] (corners are fractions of the image size)", "outside"
        )
    if x1 < x0 or y1 < y0:
        raise BoxError(f"{where}box {list(box)} has x1 < x0 or y1 < y0 (it must be [x0, y0, x1, y1])", "inverted")
    if x1 == x0 or y1 == y0:
        raise BoxError(f"{where}box {list(box)} has zero width or height", "empty")
    return x0, y0, x1, y1


def check_layout(layout, where: str = "") -> list[dict]:
    """One layout → ``[{"label": ..., "box": [x0, y0, x1, y1]}]`` with every box checked by :func:`check_box`.

    Also takes the columnar form a ``datasets`` column of structs gives (``{"label": [...], "box": [...]}``).
    Labels are returned as given (a tokenizer or planner maps them to ids and says which are unknown).
    """
    if isinstance(layout, dict) and set(layout) >= set(OBJECT_KEYS) and isinstance(layout["label"], list):
        layout = [{"label": label, "box": box} for label, box in zip(layout["label"], layout["box"])]
    if not isinstance(layout, (list, tuple)):
        raise ValueError(
            f"{where}a layout must be a list of objects {{'label': ..., 'box': [x0, y0, x1, y1]}}, "
            f"got {type(layout).__name__}"
        )
    objects = []
    for j, obj in enumerate(layout):
        at = f"{where}object {j}: "
        if not isinstance(obj, dict) or set(obj) != set(OBJECT_KEYS):
            got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise ValueError(f"{at}expected a dict with keys {list(OBJECT_KEYS)}, got {got}")
        objects.append({"label": obj["label"], "box": list(check_box(obj["box"], at))})
    return objects


def as_layout_batch(layouts) -> list:
    """One layout (a list of ``{"label", "box"}`` dicts) → a batch of one; a list of layouts → that list."""
    if isinstance(layouts, (list, tuple)) and layouts and all(isinstance(o, dict) for o in layouts):
        return [layouts]  # one layout
    if not isinstance(layouts, (list, tuple)) or not layouts:
        raise ValueError(
            "layouts must be a layout (a list of {'label': ..., 'box': [x0, y0, x1, y1]}) or a non-empty "
            f"list of layouts, got {layouts!r}"
        )
    return list(layouts)


# ---------------------------------------------------------------------------------------------- prompts
def as_prompt_list(prompt, name: str = "prompt") -> list[str]:
    """A str or a non-empty list of str → a list of str (a batch of one for a str)."""
    if isinstance(prompt, str):
        return [prompt]
    if not isinstance(prompt, (list, tuple)):
        raise TypeError(f"`{name}` must be a str or a list of str, got {type(prompt).__name__}")
    if not prompt:
        raise ValueError(f"`{name}` is an empty list")
    for i, p in enumerate(prompt):
        if not isinstance(p, str):
            raise TypeError(f"`{name}`[{i}] must be a str, got {type(p).__name__}")
    return list(prompt)


# ---------------------------------------------------------------------------------------------- images, masks
def _value_range(tensor: torch.Tensor) -> tuple[float | None, float | None]:
    """(min, max) of a tensor's values (NaN if it holds one), read in one host transfer; (None, None) where there
    is nothing to read: no elements, or the meta device (no values; a whole call on it must not read any)."""
    if tensor.device.type == "meta" or tensor.numel() == 0:
        return None, None
    if tensor.dtype == torch.bool:
        return 0.0, 1.0
    low, high = torch.stack(torch.aminmax(tensor.detach())).double().tolist()  # NaN propagates to both
    return low, high


def image_tensor(image, name: str = "image") -> torch.Tensor:
    """PIL RGB image(s) or a (B, 3, H, W) / (3, H, W) float tensor in [-1, 1] → a (B, 3, H, W) tensor in [-1, 1]."""
    images = image if isinstance(image, list) else [image]
    if images and all(isinstance(im, PIL.Image.Image) for im in images):
        for i, im in enumerate(images):
            if im.mode != "RGB":
                raise ValueError(
                    f"`{name}`[{i}] has mode {im.mode!r}; an RGB image is required (use image.convert('RGB'))"
                )
        if len({im.size for im in images}) != 1:
            raise ValueError(f"all `{name}` images must have the same size, got {[im.size for im in images]}")
        array = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in images])  # (B, H, W, 3)
        return torch.from_numpy(array).permute(0, 3, 1, 2) * 2.0 - 1.0  # (B, 3, H, W)
    if isinstance(image, torch.Tensor):
        tensor = image[None] if image.ndim == 3 else image
        if tensor.ndim != 4 or not tensor.dtype.is_floating_point:
            raise ValueError(
                f"`{name}` tensor must be float (B, 3, H, W) in [-1, 1], got {image.dtype} {tuple(image.shape)}"
            )
        low, high = _value_range(tensor)
        if low is not None and (math.isnan(low) or math.isnan(high)):
            raise ValueError(f"`{name}` tensor holds NaN values; an image tensor has values in [-1, 1]")
        if low is not None and (low < -1 - IMAGE_RANGE_TOLERANCE or high > 1 + IMAGE_RANGE_TOLERANCE):
            hint = " (x / 127.5 - 1 maps [0, 255] to it)" if high > 2 else " (2 * x - 1 maps [0, 1] to it)"
            raise ValueError(
                f"`{name}` tensor has values in [{low:.4g}, {high:.4g}]; an image tensor must be in [-1, 1]{hint}"
            )
        return tensor
    raise TypeError(f"`{name}` must be a PIL image, a list of them or a tensor, got {type(image).__name__}")


def mask_tensor(mask_image, name: str = "mask_image") -> torch.Tensor:
    """PIL / numpy / tensor mask(s) → (B, 1, H, W) in {0, 1} (1 = fill), binarised at :data:`MASK_THRESHOLD`."""
    masks = mask_image if isinstance(mask_image, list) else [mask_image]
    if masks and all(isinstance(m, PIL.Image.Image) for m in masks):
        if len({m.size for m in masks}) != 1:
            raise ValueError(f"all `{name}` images must have the same size, got {[m.size for m in masks]}")
        array = np.stack([np.asarray(m.convert("L"), dtype=np.float32) / 255.0 for m in masks])  # (B, H, W)
        mask = torch.from_numpy(array)[:, None]  # (B, 1, H, W)
    else:
        if isinstance(mask_image, np.ndarray):
            mask_image = torch.from_numpy(mask_image)
        if not isinstance(mask_image, torch.Tensor):
            raise TypeError(
                f"`{name}` must be a PIL image, a list of them, a numpy array or a tensor in [0, 1], got "
                f"{type(mask_image).__name__}"
            )
        low, high = _value_range(mask_image)
        if low is not None and (math.isnan(low) or math.isnan(high)):
            raise ValueError(f"`{name}` holds NaN values; a mask has values in [0, 1] (1 = fill)")
        if low is not None and (low < 0 or high > 1):
            hint = " (divide a 0/255 mask by 255)" if high > 1 else ""
            raise ValueError(
                f"`{name}` has values in [{low:.4g}, {high:.4g}]; a mask must be in [0, 1] (1 = fill){hint}"
            )
        mask = mask_image.float()
        if mask.ndim == 2:
            mask = mask[None, None]  # (1, 1, H, W)
        elif mask.ndim == 3:
            mask = mask[:, None]  # (B, 1, H, W)
        if mask.ndim != 4 or mask.shape[1] != MASK_CHANNELS:
            raise ValueError(
                f"`{name}` must be (H, W), (B, H, W) or (B, 1, H, W), got shape {tuple(mask_image.shape)}"
            )
    return (mask >= MASK_THRESHOLD).float()
