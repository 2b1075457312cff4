"""A procedural dataset for smoke tests and the shipped default models: filled shapes on a light background.

Every row is drawn from its own seeded generator (``numpy.random.default_rng([seed, index])``), so a row never
depends on how many rows were made before it, the same (seed, index) gives the same image on every machine,
and a streaming copy yields exactly the rows of the in-memory one. Nothing is downloaded.

A scene holds 1–3 non-overlapping filled shapes ({circle, square, triangle} × {red, green, blue, yellow}),
each inside a square, pixel-aligned box with a gap of at least ``MIN_GAP`` pixels to its neighbours. The
columns are:

==========  =====================================================================================
column      content
==========  =====================================================================================
image       the RGB image (``size`` × ``size``, 64 by default), drawn 4× supersampled, box-filtered
caption     the objects left to right (by box centre): "a red circle and a blue square"
layout      ``[{"label": "red circle", "box": [x0, y0, x1, y1]}, ...]`` in [0, 1], origin top-left — the
            project-wide layout format (the same order as the caption)
low_res     a ``low_res_size`` × ``low_res_size`` (16) bicubic copy, the super-resolution input
==========  =====================================================================================

Example:
    >>> from ldm_hub.data.shapes import make_shapes_dataset
    >>> ds = make_shapes_dataset(4, seed=0)
    >>> row = ds[0]
    >>> row["image"].size, row["low_res"].size
    ((64, 64), (16, 16))
    >>> row["caption"] == caption_for([obj["label"] for obj in row["layout"]])
    True
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence

import numpy as np
import PIL.Image
import PIL.ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (214, 48, 49),
    "green": (46, 160, 67),
    "blue": (47, 84, 214),
    "yellow": (232, 190, 24),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
BACKGROUND: tuple[int, int, int] = (240, 238, 230)
LABELS: tuple[str, ...] = tuple(f"{color} {shape}" for color in COLORS for shape in SHAPES)

# The fraction of its box each shape covers: square 1, inscribed circle π/4, isosceles triangle ½.
FILL_RATIO: dict[str, float] = {"square": 1.0, "circle": float(np.pi / 4), "triangle": 0.5}

DEFAULT_SIZE = 64
DEFAULT_LOW_RES_SIZE = 16
MIN_OBJECTS, MAX_OBJECTS = 1, 3
# Shape side as a fraction of the image side, and the smallest gap between two boxes, in pixels.
MIN_SIDE_FRACTION, MAX_SIDE_FRACTION = 0.22, 0.42
MIN_GAP = 2
# Drawing resolution relative to the output (anti-aliased edges after a box-filter downsample).
SUPERSAMPLE = 4
# Placement tries per object before the whole scene is drawn again.
PLACEMENT_TRIES = 50


def parse_label(label: str) -> tuple[str, str]:
    """``"red circle"`` → ``("red", "circle")``; raises ValueError for anything else.

    Example:
        >>> parse_label("yellow triangle")
        ('yellow', 'triangle')
    """
    parts = str(label).split()
    if len(parts) != 2 or parts[0] not in COLORS or parts[1] not in SHAPES:
        raise ValueError(f"unknown shape label {label!r}; labels are '<colour> <shape>', e.g. {LABELS[:3]}")
    return parts[0], parts[1]


def caption_for(labels: Sequence[str]) -> str:
    """The caption naming ``labels`` in order: ``"a red circle, a blue square and a green triangle"``.

    Example:
        >>> caption_for(["red circle", "blue square"])
        'a red circle and a blue square'
    """
    if not labels:
        return ""
    phrases = [f"a {label}" for label in labels]
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


_PHRASE = re.compile(r"\ban? (\w+) (\w+)")


def parse_caption(caption: str) -> list[str]:
    """The labels a caption asks for, in order (the inverse of :func:`caption_for`).

    Example:
        >>> parse_caption("a red circle, a blue square and a green triangle")
        ['red circle', 'blue square', 'green triangle']
    """
    labels = [f"{color} {shape}" for color, shape in _PHRASE.findall(caption.lower())]
    for label in labels:
        parse_label(label)
    return labels


def sample_layout(
    rng: np.random.Generator,
    size: int = DEFAULT_SIZE,
    min_objects: int = MIN_OBJECTS,
    max_objects: int = MAX_OBJECTS,
) -> list[dict]:
    """A random scene: 1–3 labelled, non-overlapping square boxes, sorted left to right by box centre.

    Boxes are whole pixels of a ``size``-pixel image, returned in [0, 1] coordinates.
    """
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    lo, hi = round(MIN_SIDE_FRACTION * size), round(MAX_SIDE_FRACTION * size)
    while True:
        count = int(rng.integers(min_objects, max_objects + 1))
        boxes: list[tuple[int, int, int, int]] = []
        for _ in range(count):
            for _ in range(PLACEMENT_TRIES):
                side = int(rng.integers(lo, hi + 1))
                x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, size=2))
                box = (x0, y0, x0 + side, y0 + side)
                if all(_apart(box, other, MIN_GAP) for other in boxes):
                    boxes.append(box)
                    break
            else:
                break
        if len(boxes) == count:
            break
    labels = [LABELS[int(i)] for i in rng.integers(0, len(LABELS), size=count)]
    objects = sorted(zip(boxes, labels), key=lambda item: (item[0][0] + item[0][2], item[0][1]))
    return [{"label": label, "box": [v / size for v in box]} for box, label in objects]


def _apart(a: tuple[int, ...], b: tuple[int, ...], gap: int) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def render_layout(layout: Sequence[dict], size: int = DEFAULT_SIZE) -> PIL.Image.Image:
    """Draw a layout (labels + boxes in [0, 1]) as the dataset does: the ground truth for any layout.

    Example:
        >>> render_layout([{"label": "red square", "box": [0.25, 0.25, 0.5, 0.5]}]).getpixel((20, 20))
        (214, 48, 49)
    """
    big = size * SUPERSAMPLE
    canvas = PIL.Image.new("RGB", (big, big), BACKGROUND)
    draw = PIL.ImageDraw.Draw(canvas)
    for obj in layout:
        color, shape = parse_label(obj["label"])
        x0, y0, x1, y1 = (round(v * big) for v in obj["box"])
        fill = COLORS[color]
        if shape == "square":
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
        elif shape == "circle":
            draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
        else:
            draw.polygon([(x0, y1 - 1), ((x0 + x1 - 1) / 2, y0), (x1 - 1, y1 - 1)], fill=fill)
    return canvas.resize((size, size), PIL.Image.Resampling.BOX)


def downsample(image: PIL.Image.Image, low_res_size: int) -> PIL.Image.Image:
    """The super-resolution degradation: a bicubic (anti-aliased) resize to ``low_res_size``."""
    return image.resize((low_res_size, low_res_size), PIL.Image.Resampling.BICUBIC)


def shapes_row(
    index: int,
    seed: int = 0,
    size: int = DEFAULT_SIZE,
    low_res_size: int = DEFAULT_LOW_RES_SIZE,
    min_objects: int = MIN_OBJECTS,
    max_objects: int = MAX_OBJECTS,
) -> dict:
    """Row ``index`` of the dataset with ``seed``, as PIL images and Python values."""
    rng = np.random.default_rng([seed, index])
    layout = sample_layout(rng, size, min_objects, max_objects)
    image = render_layout(layout, size)
    return {
        "image": image,
        "caption": caption_for([obj["label"] for obj in layout]),
        "layout": layout,
        "low_res": downsample(image, low_res_size),
    }


def shapes_features():
    """The ``datasets.Features`` of the shapes dataset."""
    import datasets

    return datasets.Features(
        {
            "image": datasets.Image(),
            "caption": datasets.Value("string"),
            "layout": datasets.List(
                {"label": datasets.Value("string"), "box": datasets.List(datasets.Value("float64"))}
            ),
            "low_res": datasets.Image(),
        }
    )


def _png(image: PIL.Image.Image) -> dict:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _encoded_rows(indices: Sequence[int], **kwargs) -> Iterator[dict]:
    for index in indices:
        row = shapes_row(int(index), **kwargs)
        yield {**row, "image": _png(row["image"]), "low_res": _png(row["low_res"])}


def make_shapes_dataset(
    num_samples: int = 1000,
    seed: int = 0,
    *,
    size: int = DEFAULT_SIZE,
    low_res_size: int = DEFAULT_LOW_RES_SIZE,
    min_objects: int = MIN_OBJECTS,
    max_objects: int = MAX_OBJECTS,
    start: int = 0,
    streaming: bool = False,
):
    """The shapes dataset: rows ``start … start + num_samples − 1`` of the stream with ``seed``.

    Returns a ``datasets.Dataset`` (images stored as PNG bytes in memory), or a ``datasets.IterableDataset``
    yielding the same rows when ``streaming=True``. Use a different ``seed`` (or ``start``) for held-out data.

    Example:
        >>> ds = make_shapes_dataset(8, seed=1)
        >>> len(ds), ds.column_names
        (8, ['image', 'caption', 'layout', 'low_res'])
    """
    import datasets

    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if size % low_res_size:
        raise ValueError(f"size {size} must be a multiple of low_res_size {low_res_size}")
    kwargs = dict(seed=seed, size=size, low_res_size=low_res_size, min_objects=min_objects, max_objects=max_objects)
    indices = list(range(start, start + num_samples))
    features = shapes_features()
    if streaming:
        return datasets.IterableDataset.from_generator(
            _shard_generator,
            features=features,
            gen_kwargs={"indices": indices, "options": tuple(sorted(kwargs.items()))},
        )
    columns: dict[str, list] = {name: [] for name in features}
    for row in _encoded_rows(indices, **kwargs):
        for name in columns:
            columns[name].append(row[name])
    return datasets.Dataset.from_dict(columns, features=features)


def _shard_generator(indices: list[int], options: tuple) -> Iterator[dict]:
    # ``indices`` (a list) is what datasets splits into shards; ``options`` (a tuple) goes whole to every shard.
    yield from _encoded_rows(indices, **dict(options))


def main(argv: list[str] | None = None) -> int:
    """``python -m ldm_hub.data.shapes --output DIR [--num-samples N] [--seed S]``: save_to_disk a copy."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ldm_hub.data.shapes", description=main.__doc__)
    parser.add_argument("--output", required=True, help="folder for Dataset.save_to_disk")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE)
    parser.add_argument("--low-res-size", type=int, default=DEFAULT_LOW_RES_SIZE)
    args = parser.parse_args(argv)
    ds = make_shapes_dataset(args.num_samples, args.seed, size=args.size, low_res_size=args.low_res_size)
    ds.save_to_disk(args.output)
    print(f"wrote {len(ds)} rows to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
