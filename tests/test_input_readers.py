"""Issue 15, group 4, fourth bullet (the input-kind readers of ldm_hub.conditioning.inputs): inputs against their
documented ranges and kinds, each a ValueError / TypeError naming the argument, never an IndexError or
AttributeError from deep inside; tensors on the meta device are not read."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from ldm_hub.conditioning.inputs import (
    BoxError,
    as_layout_batch,
    as_prompt_list,
    check_box,
    check_layout,
    image_tensor,
    mask_tensor,
)


# ---------------------------------------------------------------------------------------------- masks
@pytest.mark.parametrize(
    "mask, match",
    [
        (np.full((8, 8), 255, np.uint8), r"`mask_image` has values in \[255, 255\]; a mask must be in \[0, 1\]"),
        (torch.full((1, 1, 8, 8), 2.0), r"`mask_image` has values in \[2, 2\]"),
        (-torch.ones(8, 8), r"`mask_image` has values in \[-1, -1\]"),
        (torch.tensor([[0.0, float("nan")], [1.0, 0.5]]), r"`mask_image` holds NaN values"),
        (np.array([[0.0, np.nan]], np.float32), r"`mask_image` holds NaN values"),
    ],
)
def test_mask_outside_unit_range_or_nan(mask, match):
    with pytest.raises(ValueError, match=match):
        mask_tensor(mask)


def test_mask_of_255s_says_how_to_fix_it():
    with pytest.raises(ValueError, match=r"divide a 0/255 mask by 255"):
        mask_tensor(np.array([[0, 255]], np.uint8))


@pytest.mark.parametrize(
    "mask",
    [np.zeros((8, 8), bool), np.array([[0.0, 1.0]], np.float32), torch.ones(2, 1, 4, 4), PIL.Image.new("L", (4, 4))],
)
def test_masks_in_range_still_read(mask):
    assert mask_tensor(mask).ndim == 4


def test_mask_not_an_array_names_the_argument():
    with pytest.raises(TypeError, match=r"`mask_image` must be a PIL image.* got str"):
        mask_tensor("mask.png")


# ---------------------------------------------------------------------------------------------- images
@pytest.mark.parametrize(
    "image, match",
    [
        (torch.rand(1, 3, 8, 8) * 255, r"`image` tensor has values in \[.*\]; an image tensor must be in \[-1, 1\] "
         r"\(x / 127.5 - 1 maps \[0, 255\] to it\)"),
        (torch.full((3, 8, 8), 255.0), r"`image` tensor has values in \[255, 255\]"),
        (torch.full((1, 3, 8, 8), -2.0), r"`image` tensor has values in \[-2, -2\]"),
        (torch.full((1, 3, 8, 8), float("nan")), r"`image` tensor holds NaN values"),
    ],
)  # fmt: skip
def test_image_tensor_outside_its_documented_range(image, match):
    with pytest.raises(ValueError, match=match):
        image_tensor(image)


def test_image_tensor_of_ints_names_the_argument():
    with pytest.raises(ValueError, match=r"`image` tensor must be float \(B, 3, H, W\) in \[-1, 1\], got torch.uint8"):
        image_tensor(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


def test_image_tensors_in_range_still_read():
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert image_tensor(x) is x
    assert image_tensor(x.clamp(-1, 1) * 1.05).shape == (2, 3, 8, 8)  # a resampled image's small overshoot
    assert image_tensor(PIL.Image.new("RGB", (8, 8))).shape == (1, 3, 8, 8)


def test_image_wrong_kind_names_the_argument():
    with pytest.raises(TypeError, match=r"`low_res` must be a PIL image, a list of them or a tensor, got str"):
        image_tensor("photo.png", "low_res")


def test_meta_tensors_are_not_read():
    """On the meta device there are no values: the readers check shapes only (the whole-call meta test relies on
    it), and read nothing that would raise."""
    assert image_tensor(torch.empty(1, 3, 8, 8, device="meta")).is_meta
    assert mask_tensor(torch.empty(1, 1, 8, 8, device="meta")).is_meta


# ---------------------------------------------------------------------------------------------- prompts
@pytest.mark.parametrize(
    "prompt, error, match",
    [
        (123, TypeError, r"`prompt` must be a str or a list of str, got int"),
        (None, TypeError, r"`prompt` must be a str or a list of str, got NoneType"),
        ([], ValueError, r"`prompt` is an empty list"),
        (["a cat", None], TypeError, r"`prompt`\[1\] must be a str, got NoneType"),
        (("a", 3), TypeError, r"`prompt`\[1\] must be a str, got int"),
    ],
)
def test_prompt_kinds(prompt, error, match):
    with pytest.raises(error, match=match):
        as_prompt_list(prompt)


def test_negative_prompt_is_named_as_itself():
    with pytest.raises(TypeError, match=r"`negative_prompt` must be a str"):
        as_prompt_list(1.5, "negative_prompt")


def test_prompts_still_read():
    assert as_prompt_list("a") == ["a"] and as_prompt_list(("a", "b")) == ["a", "b"]


# ---------------------------------------------------------------------------------------------- boxes, layouts
@pytest.mark.parametrize(
    "box, reason",
    [
        ("0, 0, 1, 1", "form"),
        (["0", 0, 1, 1], "form"),
        ([0, 0, 1], "form"),
        ([0, 0, True, 1], "form"),
        ({"x0": 0}, "form"),
        ([0, 0, 1.5, 1], "outside"),
        ([0, float("nan"), 1, 1], "outside"),
        ([0.5, 0, 0.2, 1], "inverted"),
        ([0.5, 0, 0.5, 1], "empty"),
    ],
)
def test_box_rule(box, reason):
    with pytest.raises(BoxError, match=r"layout 0, object 2: box") as info:
        check_box(box, "layout 0, object 2: ")
    assert info.value.reason == reason and isinstance(info.value, ValueError)


def test_box_given_as_a_string_inside_a_layout_names_the_object():
    with pytest.raises(ValueError, match=r"object 0: box '0 0 1 1' must be four numbers \[x0, y0, x1, y1\]"):
        check_layout([{"label": "red circle", "box": "0 0 1 1"}])


@pytest.mark.parametrize(
    "layout, match",
    [
        ("red circle", r"a layout must be a list of objects .* got str"),
        ([{"label": "red circle"}], r"object 0: expected a dict with keys \['label', 'box'\], got \['label'\]"),
        (["red circle"], r"object 0: expected a dict with keys .* got str"),
    ],
)
def test_layout_kinds(layout, match):
    with pytest.raises(ValueError, match=match):
        check_layout(layout)


@pytest.mark.parametrize("layouts", [[], None, "red circle"])
def test_layout_batch_kinds(layouts):
    with pytest.raises(ValueError, match=r"layouts must be a layout"):
        as_layout_batch(layouts)
