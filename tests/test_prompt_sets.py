"""The prompt test sets of issue 16 item 2: sizes, what they cover, and that the template grammar is reproducible."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from ldm_hub.data.shapes import LABELS, MAX_OBJECTS
from ldm_hub.prompt_evaluation import PLACE_FORMS, RELATION_FORMS, load_handwritten, template_prompts

TEMPLATE_COPY = Path(__file__).parent / "data" / "prompts_template.json"


def _well_formed(entry):
    n = len(entry["objects"])
    assert 1 <= n <= MAX_OBJECTS and all(label in LABELS for label in entry["objects"]), entry
    for kind, i, j in entry["relations"]:
        assert kind in ("left", "right", "above", "below") and 0 <= i < n and 0 <= j < n and i != j, entry
    for kind, i in entry["places"]:
        assert kind in ("left", "right", "middle", "top", "bottom") and 0 <= i < n, entry


def test_handwritten_set():
    entries = load_handwritten()
    assert len(entries) >= 20 and len({e["prompt"] for e in entries}) == len(entries)
    for entry in entries:
        _well_formed(entry)


def test_template_set_is_seeded_and_committed():
    entries = template_prompts()
    assert len(entries) >= 120 and len({e["prompt"] for e in entries}) >= 0.95 * len(entries)
    assert entries == template_prompts()
    assert template_prompts(seed=1) != entries
    committed = json.loads(TEMPLATE_COPY.read_text())["prompts"]
    assert committed == entries, "the template grammar changed: regenerate tests/data/prompts_template.json"
    for entry in entries:
        _well_formed(entry)


@pytest.mark.parametrize("minimum", [3])
def test_template_set_covers_what_issue_16_lists(minimum):
    entries = template_prompts()
    tags = Counter(tag for e in entries for tag in e["tags"])
    wanted = [
        "count:word", "count:digit", "plural", "article:a", "article:an", "article:the", "count:one",
        "article:none", "comma", "and", "comma-and", "title-case", "upper-case", "punctuation",
        *(f"relation:{words}" for words, _ in RELATION_FORMS), *(f"place:{words}" for words in PLACE_FORMS.values()),
    ]  # fmt: skip
    assert {tag: tags[tag] for tag in wanted if tags[tag] < minimum} == {}
    sizes = Counter(len(e["objects"]) for e in entries)
    assert all(sizes[n] >= 20 for n in (1, 2, 3)), sizes
    # the words are in the prompts as tagged
    for e in entries:
        text = e["prompt"].lower()
        for tag in e["tags"]:
            if tag.startswith(("relation:", "place:")):
                assert tag.split(":", 1)[1] in text, (tag, e["prompt"])


# ---------------------------------------------------------------------------------------------- the scorer
def test_scorer_reads_rendered_plans_as_right_and_a_swap_as_wrong():
    from ldm_hub.data.shapes import render_layout
    from ldm_hub.evaluation import detect_shapes
    from ldm_hub.prompt_evaluation import score_prompt

    entry = {"objects": ["red circle", "red circle", "blue square"], "relations": [["above", 0, 2], ["above", 1, 2]],
             "places": []}  # fmt: skip
    layout = [
        {"label": "red circle", "box": [0.05, 0.05, 0.3, 0.3]},
        {"label": "red circle", "box": [0.6, 0.1, 0.85, 0.35]},
        {"label": "blue square", "box": [0.3, 0.6, 0.6, 0.9]},
    ]
    assert score_prompt(entry, detect_shapes(render_layout(layout))) == {
        "labels_right": True, "placement_right": True, "exact": True,
    }  # fmt: skip
    low = [dict(layout[0], box=[0.05, 0.65, 0.3, 0.9]), *layout[1:]]  # a circle below the square
    assert score_prompt(entry, detect_shapes(render_layout(low)))["placement_right"] is False
    assert score_prompt(entry, detect_shapes(render_layout(layout[:2])))["labels_right"] is False
    placed = {"objects": ["red circle"], "relations": [], "places": [["left", 0]]}
    assert score_prompt(placed, detect_shapes(render_layout(layout[:1])))["exact"]
    assert not score_prompt(placed, detect_shapes(render_layout(layout[1:2])))["exact"]


def test_prompt_evaluation_end_to_end_on_a_small_sample(tmp_path):
    """A CI-sized run of the scorer on the shipped text default: 2 prompts per set, 2 seeds, 3 steps."""
    import subprocess
    import sys

    out = tmp_path / "prompts.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "evaluate_prompts.py"
    args = ["--num-prompts", "2", "--seeds-per-prompt", "2", "--steps", "3", "--json", str(out)]
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
    assert done.returncode in (0, 3), done.stderr
    result = json.loads(out.read_text())
    assert result["num_prompts"] == {"handwritten": 2, "template": 2} and result["steps"] == 3
    assert set(result["thresholds"]) == {"handwritten_exact", "template_exact"}
    for name in ("handwritten", "template"):
        assert 0 <= result["metrics"][f"{name}_exact"] <= result["metrics"][f"{name}_labels"] <= 1
        assert result["details"][name]["images"] == 4
