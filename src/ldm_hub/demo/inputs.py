"""Reading what a visitor sends: uploads (size and pixel caps, unreadable files), numbers, seeds, and the layout
table (:func:`parse_layout`, :func:`draw_layout`). Every problem is a :class:`gradio.Error` with a message, never
a stack trace. Imports nothing of ldm_hub but the demo's settings."""

from __future__ import annotations

import html
import os
import random
from collections.abc import Mapping, Sequence

import gradio as gr
import PIL.Image
import PIL.ImageColor
import PIL.ImageDraw

from ..conditioning.inputs import BoxError, check_box
from .settings import LAYOUT_HEADERS, DemoSettings

# Box colours when a label names no colour (the first colour word of a label is used otherwise).
_PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c"]


def _error(message: str) -> gr.Error:
    """A gr.Error shown to the user (its text is rendered as HTML, so escape it; no traceback in the log)."""
    return gr.Error(html.escape(message, quote=False), print_exception=False)


# ---------------------------------------------------------------------------------------------- uploads
def _check_upload_size(path: str | None, limit: int) -> None:
    if path and os.path.isfile(path) and os.path.getsize(path) > limit:
        raise _error(f"the upload is {os.path.getsize(path) / 2**20:.1f} MB; the limit is {limit / 2**20:.1f} MB")


def guard_upload(component: gr.components.Component, max_upload_bytes: int) -> gr.components.Component:
    """Make an image input's unreadable or oversized uploads a gr.Error instead of a server error.

    Wraps the instance's ``preprocess`` (gradio decodes an upload there, before the event function runs).
    Subclassing the component instead would make gradio write a ``.pyi`` stub next to this module.
    """
    preprocess = component.preprocess

    def checked_preprocess(payload):
        if payload is not None:
            files = [getattr(payload, "background", None) or payload]  # an ImageEditor value, or one image
            for data in files:
                _check_upload_size(getattr(data, "path", None), max_upload_bytes)
        try:
            return preprocess(payload)
        except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as e:
            name = getattr(payload, "orig_name", None) or "the upload"
            raise _error(f"{name} is not a readable image file ({type(e).__name__})") from None

    component.preprocess = checked_preprocess
    return component


def _open_image(path: str | None, what: str, max_side: int) -> PIL.Image.Image:
    """Open an uploaded file, checking its size in pixels before decoding it."""
    if not path:
        raise _error(f"upload {what} first")
    try:
        image = PIL.Image.open(path)
        if max(image.size) > max_side:
            raise _error(f"{what} is {image.width}x{image.height} pixels; the limit is {max_side} per side")
        image.load()
    except (OSError, SyntaxError, PIL.Image.DecompressionBombError) as e:
        raise _error(f"{what} is not a readable image file ({type(e).__name__})") from None
    return image


def _to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """RGB; transparent pixels flattened onto white."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = PIL.Image.new("RGB", rgba.size, "white")
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def _crop_to_multiple(image: PIL.Image.Image, multiple: int, what: str) -> PIL.Image.Image:
    """Crop the right/bottom edge so both sides are multiples of what the model needs."""
    width, height = (s - s % multiple for s in image.size)
    if width == 0 or height == 0:
        raise _error(f"{what} is {image.width}x{image.height} pixels; it must be at least {multiple}x{multiple}")
    return image if (width, height) == image.size else image.crop((0, 0, width, height))


# ---------------------------------------------------------------------------------------------- checks
def _as_int(name: str, value, low: int, high: int) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _error(f"{name} must be a whole number, got {value!r}") from None
    if not number.is_integer() or not low <= number <= high:
        raise _error(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return int(number)


def _as_float(name: str, value, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _error(f"{name} must be a number, got {value!r}") from None
    if not low <= number <= high:  # also false for NaN
        raise _error(f"{name} must be from {low:g} to {high:g}, got {value!r}")
    return number


def _pick_seed(seed, randomize: bool, settings: DemoSettings) -> int:
    if randomize:
        return random.SystemRandom().randrange(settings.max_seed + 1)
    return _as_int("seed", seed, 0, settings.max_seed)


# ---------------------------------------------------------------------------------------------- layout
def _label_colour(label: str, index: int) -> str:
    for word in str(label).lower().split():
        try:
            PIL.ImageColor.getrgb(word)
            return word
        except ValueError:
            continue
    return _PALETTE[index % len(_PALETTE)]


def _table_rows(table) -> list[list]:
    """The rows of a gr.Dataframe value (a pandas frame, a {"data": ...} dict or a list of lists)."""
    if table is None:
        return []
    if hasattr(table, "values") and hasattr(table, "columns"):  # pandas
        return table.values.tolist()
    if isinstance(table, Mapping):
        return list(table.get("data") or [])
    return [list(row) for row in table]


def parse_layout(table, *, categories: Sequence[str] | None = None, max_objects: int | None = None) -> list[dict]:
    """Rows (label, x0, y0, x1, y1) → ``[{"label": ..., "box": [x0, y0, x1, y1]}, ...]``, checked.

    Corners are fractions of the canvas in [0, 1], origin top left. Blank rows are skipped; a label that is a
    whole number is a category id (the only kind a model without category names takes).

    Example:
        >>> from ldm_hub.demo import parse_layout
        >>> parse_layout([["red circle", 0.1, 0.1, 0.4, 0.4], ["", "", "", "", ""]], categories=["red circle"])
        [{'label': 'red circle', 'box': [0.1, 0.1, 0.4, 0.4]}]
    """
    layout = []
    for number, row in enumerate(_table_rows(table), start=1):
        row = list(row) + [None] * (len(LAYOUT_HEADERS) - len(row))
        label, corners = row[0], row[1 : len(LAYOUT_HEADERS)]
        label = "" if label is None else str(label).strip()
        if not label and all(c in (None, "") for c in corners):
            continue
        if not label:
            raise _error(f"row {number}: the label is empty")
        try:
            box = [float(c) for c in corners]
        except (TypeError, ValueError):
            raise _error(f"row {number} ({label!r}): x0, y0, x1, y1 must be numbers, got {corners}") from None
        try:
            check_box(box)  # the one box rule; its failures worded for the table
        except BoxError as e:
            if e.reason == "outside":
                raise _error(
                    f"row {number} ({label!r}): box {box} lies outside the canvas; corners are fractions "
                    "of the image in [0, 1]"
                ) from None
            raise _error(
                f"row {number} ({label!r}): box {box} is empty or inverted: x1 must exceed x0 and y1 must exceed y0"
            ) from None
        if label.lstrip("-").isdigit():
            label = int(label)
        elif categories is None:
            raise _error(f"row {number}: this model knows category ids only, not names; got {label!r}")
        elif label not in categories:
            known = ", ".join(list(categories)[:8])
            raise _error(f"row {number}: unknown label {label!r}; known labels include {known}")
        layout.append({"label": label, "box": box})
    if not layout:
        raise _error("add at least one box (a row with a label and x0, y0, x1, y1 in [0, 1])")
    if max_objects is not None and len(layout) > max_objects:
        raise _error(f"{len(layout)} boxes; this model takes at most {max_objects}")
    return layout


def draw_layout(layout: list[dict], image: PIL.Image.Image | None = None, size: int = 256) -> PIL.Image.Image:
    """Draw labelled boxes on ``image`` (a copy) or on a blank square canvas of side ``size``."""
    canvas = PIL.Image.new("RGB", (size, size), "#f4f4f4") if image is None else image.convert("RGB").copy()
    draw = PIL.ImageDraw.Draw(canvas)
    width, height = canvas.size
    line = max(1, min(width, height) // 128)
    for index, obj in enumerate(layout):
        x0, y0, x1, y1 = obj["box"]
        colour = _label_colour(obj["label"], index)
        draw.rectangle(
            [x0 * (width - 1), y0 * (height - 1), x1 * (width - 1), y1 * (height - 1)], outline=colour, width=line
        )
        draw.text((x0 * (width - 1) + line + 1, y0 * (height - 1) + line), str(obj["label"]), fill=colour)
    return canvas
