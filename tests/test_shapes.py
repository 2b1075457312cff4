"""The procedural shapes dataset: deterministic rows, the layout format, captions, low-res copies."""

from __future__ import annotations

import itertools

import numpy as np
import PIL.Image
import pytest

from ldm_hub.data import shapes
from ldm_hub.data.shapes import (
    BACKGROUND,
    COLORS,
    LABELS,
    MIN_GAP,
    caption_for,
    make_shapes_dataset,
    parse_caption,
    parse_label,
    render_layout,
)

N = 60


@pytest.fixture(scope="module")
def dataset():
    return make_shapes_dataset(N, seed=3)


def test_columns_features_and_sizes(dataset):
    assert dataset.column_names == ["image", "caption", "layout", "low_res"]
    row = dataset[0]
    assert row["image"].mode == "RGB" and row["image"].size == (64, 64)
    assert row["low_res"].mode == "RGB" and row["low_res"].size == (16, 16)
    assert isinstance(row["caption"], str) and isinstance(row["layout"], list)


def test_rows_are_deterministic_and_independent_of_the_count(dataset):
    again = make_shapes_dataset(N, seed=3)
    other = make_shapes_dataset(5, seed=4)
    longer = make_shapes_dataset(10, seed=3, start=N - 5)  # rows N-5 .. N+4 of the same stream
    for i in range(5):
        assert np.array_equal(np.asarray(dataset[i]["image"]), np.asarray(again[i]["image"]))
        assert dataset[N - 5 + i]["caption"] == longer[i]["caption"]
    assert [r["caption"] for r in other] != [dataset[i]["caption"] for i in range(5)]


def test_streaming_yields_the_same_rows(dataset):
    stream = make_shapes_dataset(8, seed=3, streaming=True)
    for i, row in enumerate(stream):
        assert row["caption"] == dataset[i]["caption"] and row["layout"] == dataset[i]["layout"]
        assert np.array_equal(np.asarray(row["image"]), np.asarray(dataset[i]["image"]))


def test_layout_format_boxes_and_caption(dataset):
    counts = set()
    for row in dataset:
        layout = row["layout"]
        counts.add(len(layout))
        assert 1 <= len(layout) <= 3
        for obj in layout:
            assert obj["label"] in LABELS
            x0, y0, x1, y1 = obj["box"]
            assert 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0
            assert x1 - x0 == pytest.approx(y1 - y0)  # square boxes, whole pixels
            assert (x0 * 64) == pytest.approx(round(x0 * 64))
        for a, b in itertools.combinations(layout, 2):  # non-overlapping, with a gap
            gap = MIN_GAP / 64
            assert (
                a["box"][2] + gap <= b["box"][0]
                or b["box"][2] + gap <= a["box"][0]
                or a["box"][3] + gap <= b["box"][1]
                or b["box"][3] + gap <= a["box"][1]
            )
        centres = [o["box"][0] + o["box"][2] for o in layout]
        assert centres == sorted(centres)  # left to right
        assert row["caption"] == caption_for([o["label"] for o in layout])
        assert parse_caption(row["caption"]) == [o["label"] for o in layout]
    assert counts == {1, 2, 3}


def test_image_is_the_rendered_layout_and_low_res_its_bicubic_copy(dataset):
    for row in list(dataset)[:10]:
        assert np.array_equal(np.asarray(render_layout(row["layout"])), np.asarray(row["image"]))
        expected = row["image"].resize((16, 16), PIL.Image.Resampling.BICUBIC)
        assert np.array_equal(np.asarray(expected), np.asarray(row["low_res"]))


def test_light_background_and_filled_shapes():
    layout = [
        {"label": "red square", "box": [0.0, 0.0, 0.25, 0.25]},
        {"label": "blue circle", "box": [0.5, 0.0, 0.75, 0.25]},
        {"label": "yellow triangle", "box": [0.0, 0.5, 0.5, 1.0]},
    ]
    image = np.asarray(render_layout(layout))
    assert tuple(image[40, 60]) == BACKGROUND and min(BACKGROUND) > 200  # a light background
    assert tuple(image[8, 8]) == COLORS["red"]  # square: filled to its corners
    assert tuple(image[1, 1]) == COLORS["red"]
    assert tuple(image[8, 40]) == COLORS["blue"] and tuple(image[0, 32]) == BACKGROUND  # circle: corners empty
    assert tuple(image[60, 16]) == COLORS["yellow"] and tuple(image[34, 2]) == BACKGROUND  # triangle, apex up


def test_captions_and_labels():
    assert caption_for(["red circle"]) == "a red circle"
    assert caption_for(["red circle", "blue square"]) == "a red circle and a blue square"
    assert caption_for(["red circle", "blue square", "green triangle"]) == (
        "a red circle, a blue square and a green triangle"
    )
    assert parse_label("green square") == ("green", "square")
    with pytest.raises(ValueError, match="unknown shape label 'purple circle'"):
        parse_label("purple circle")
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        make_shapes_dataset(0)


def test_save_to_disk_entry_point(tmp_path):
    import datasets

    assert shapes.main(["--output", str(tmp_path / "ds"), "--num-samples", "4", "--seed", "1"]) == 0
    loaded = datasets.load_from_disk(str(tmp_path / "ds"))
    assert len(loaded) == 4 and loaded[0]["caption"] == make_shapes_dataset(1, seed=1)[0]["caption"]
