"""Captions as people write them (issue 16 item 2): the planner's grammar reads both prompt sets as their entries
say, places objects in two dimensions as asked, keeps the plans of plain lists, and refuses what it cannot draw."""

from __future__ import annotations

import itertools

import pytest
import torch

from ldm_hub import LayoutPlanner, default_model_path
from ldm_hub.data.shapes import LABELS
from ldm_hub.prompt_evaluation import placement_right, prompt_sets

ENTRIES = [e for entries in prompt_sets().values() for e in entries]


@pytest.fixture(scope="module")
def shipped_planner():
    return LayoutPlanner.from_pretrained(default_model_path() / "layout_planner")


def test_every_prompt_of_both_sets_parses_as_its_entry_says(shipped_planner):
    for entry in ENTRIES:
        parsed = shipped_planner.parse_prompt(entry["prompt"])
        assert list(parsed.objects) == entry["objects"], entry["prompt"]
        assert sorted(map(list, parsed.relations)) == sorted(entry["relations"]), entry["prompt"]
        assert sorted(map(list, parsed.places)) == sorted(entry["places"]), entry["prompt"]


def test_plans_place_every_prompt_as_asked(shipped_planner):
    c = shipped_planner.config
    for entry in ENTRIES:
        for seed in range(4):
            (layout,) = shipped_planner.plan([entry["prompt"]], generator=torch.Generator().manual_seed(seed))
            assert [obj["label"] for obj in layout] == entry["objects"]
            boxes = [obj["box"] for obj in layout]
            assert placement_right(entry, boxes), (entry["prompt"], seed, boxes)
            for x0, y0, x1, y1 in boxes:
                assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
                assert c.min_side - 1e-6 <= x1 - x0 <= c.max_side + 1e-6
            for a, b in itertools.combinations(boxes, 2):  # never overlapping: min_gap apart on some axis
                assert max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3]) >= c.min_gap - 1e-6


def test_relations_use_both_axes_and_chains_fit(shipped_planner):
    layouts = shipped_planner.plan(["a red circle above a blue square above a green triangle"] * 20, seed=0)
    for layout in layouts:
        (_, t0, _, b0), (_, t1, _, b1), (_, t2, _, _) = (obj["box"] for obj in layout)
        assert b0 < t1 and b1 < t2  # a column, top to bottom
    xs = {round(layout[0]["box"][0], 3) for layout in layouts}
    assert len(xs) > 10  # and anywhere across: nothing asks for an x order
    (right,) = shipped_planner.plan(["a red circle to the right of a blue square"], seed=3)
    assert right[0]["box"][0] > right[1]["box"][2]  # the circle (named first) is right of the square


def test_plain_lists_keep_the_plans_the_planner_made_before(shipped_planner):
    """Recorded with the regex parser of main at ab3843f (benchmarks/prompt_before_after.py compares images)."""
    gen = torch.Generator().manual_seed(0)
    assert shipped_planner.plan(["a green square, a red square and a blue square"], generator=gen)[0] == [
        {"label": "green square", "box": [0.219506, 0.291105, 0.596076, 0.667674]},
        {"label": "red square", "box": [0.630457, 0.110687, 0.913322, 0.393552]},
        {"label": "blue square", "box": [0.69677, 0.719035, 0.945625, 0.967889]},
    ]
    gen = torch.Generator().manual_seed(0)
    assert shipped_planner.plan(["A Yellow Circle."], generator=gen)[0] == [
        {"label": "yellow circle", "box": [0.219506, 0.291105, 0.596076, 0.667674]}
    ]


VOCABULARY = [
    "colours red, green, blue, yellow", "shapes circle, square, triangle", "counts a, an, the, one, two",
    "'to the left of'", "above", "'on top of'", "under", "'on the left'", "and", "there, is, are",
]  # fmt: skip


@pytest.mark.parametrize(
    "caption, message",
    [
        ("a cat", r"names none of this model's 12 objects \(unknown words: 'cat'\)"),  # an unknown object
        ("a purple circle", r"words this model cannot draw: 'purple'"),  # an unknown colour
        ("a red circle and a dog", r"words this model cannot draw: 'dog' \(nothing is dropped silently\)"),
        ("a big red circle", r"words this model cannot draw: 'big'"),  # a modifier
        ("a red circle next to a small blue square", r"cannot draw: 'small'"),
        ("four red circles", r"names 4 objects; this model was trained on at most 3"),  # more than trained with
        ("two red circles and 2 blue squares", r"names 4 objects; this model was trained on at most 3"),
        ("a circle", r"'circle' needs a colour \(red, green, blue, yellow\)"),
        ("a red and a blue square", r"'red' needs a shape after it"),
        ("left of a red circle", r"'left of' needs an object right before it"),
        ("a red circle above", r"'above' needs an object right after it"),
        ("a red circle, and on the left", r"'on the left' names no object"),
        ("0 red circles", r"asks for 0 objects"),
        ("red two circles", r"comes after a colour"),
    ],
)
def test_refusals_name_the_problem_and_the_vocabulary(shipped_planner, caption, message):
    with pytest.raises(ValueError, match=message) as info:
        shipped_planner.plan([caption], seed=0)
    if "trained on at most" not in message:
        for words in VOCABULARY:
            assert words in str(info.value), words


def test_contradictions_and_impossible_plans():
    planner = LayoutPlanner(labels=list(LABELS))
    with pytest.raises(ValueError, match="contradict each other .*left and right"):
        planner.plan(["a red circle left of a blue square on the left"], seed=0)
    with pytest.raises(ValueError, match="contradict each other .*above and below"):
        planner.plan(["a red circle at the bottom above a blue square"], seed=0)
    with pytest.raises(ValueError, match="'on the right' names no object"):
        planner.parse_prompt("on the left a red circle on the right")
    big = LayoutPlanner(labels=list(LABELS), min_side=0.4, max_side=0.45, max_objects=3)
    with pytest.raises(ValueError, match="could not place the 3 objects"):
        big.plan(["a red circle above a blue square above a green circle"], seed=0)


def test_vocabulary_and_other_label_sets():
    planner = LayoutPlanner(labels=["dark red circle", "box"], max_objects=5)
    v = planner.vocabulary()
    assert v["colours"] == ["dark", "red"] and v["shapes"] == ["circle", "box", "circles", "boxes"]
    assert planner.parse("three dark red circles below two boxes") == ["dark red circle"] * 3 + ["box"] * 2
    with pytest.raises(ValueError, match="this model has no 'red circle'"):
        planner.parse("a red circle")
    assert set(LayoutPlanner(labels=list(LABELS)).vocabulary()) == {
        "colours", "shapes", "counts", "relations", "places", "fillers",
    }  # fmt: skip


def test_the_shipped_text_model_states_its_native_size():
    from ldm_hub import LDMPipeline

    pipe = LDMPipeline.from_pretrained(default_model_path())
    for kwargs in ({"prompt": "a red circle"}, {"layout": [{"label": "red circle", "box": [0, 0, 0.5, 0.5]}]}):
        with pytest.raises(ValueError, match="native size 64x64 only .* got 128x96"):
            pipe(**kwargs, height=96, width=128, num_inference_steps=1)
    assert pipe("a red circle", height=64, width=64, num_inference_steps=1, output_type="np").images.shape[1:3] == (
        64,
        64,
    )
