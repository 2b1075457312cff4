"""Prompts as people write them (issue 16 item 2): two test sets of captions with the objects and the placement
they ask for.

- ``handwritten``: paraphrases written by hand (``data/prompts_handwritten.json``);
- ``template``: a seeded template grammar (:func:`template_prompts`) over the shapes vocabulary, 1–3 objects,
  covering counts in words and digits, singular and plural, with or without an article (a / an / the / one),
  commas, "and", ", and", title and upper case, trailing punctuation, the left/right words ("on the left",
  "on the right", "to the left of", "to the right of", "left of", "right of") and the above/below words
  ("above", "below", "on top of", "under").

An entry is ``{"prompt", "objects", "relations", "places", "tags"}``: ``objects`` the labels asked for in the
order written (counts expanded), ``relations`` ``[kind, i, j]`` (object ``i`` is left / right / above / below
object ``j``: box centre x for left and right, centre y for above and below), ``places`` ``[kind, i]`` (object
``i`` on the left / right / in the middle / at the top / at the bottom of the picture), ``tags`` what the entry
exercises.

Example:
    >>> entries = template_prompts(3, seed=0)
    >>> sorted(entries[0])
    ['objects', 'places', 'prompt', 'relations', 'tags']
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .data.shapes import COLORS, SHAPES

HANDWRITTEN_PATH = Path(__file__).resolve().parent / "data" / "prompts_handwritten.json"
TEMPLATE_SEED = 0
TEMPLATE_SIZE = 160
MAX_TEMPLATE_OBJECTS = 3

# The relation phrases of the template grammar and what they ask: (words, kind).
RELATION_FORMS = (
    ("to the left of", "left"),
    ("left of", "left"),
    ("to the right of", "right"),
    ("right of", "right"),
    ("above", "above"),
    ("below", "below"),
    ("on top of", "above"),
    ("under", "below"),
)
PLACE_FORMS = {
    "left": "on the left",
    "right": "on the right",
    "middle": "in the middle",
    "top": "at the top",
    "bottom": "at the bottom",
}
COUNT_WORDS = {2: "two", 3: "three"}
# (article, tag, weight) for one object; "" writes none.
ARTICLES = (("a", "article:a", 0.35), ("the", "article:the", 0.2), ("one", "count:one", 0.12),
            ("1", "count:digit", 0.1), ("", "article:none", 0.15), ("an", "article:an", 0.08))  # fmt: skip


def load_handwritten(path: str | Path = HANDWRITTEN_PATH) -> list[dict]:
    """The hand-written set, each entry with ``tags`` ``["handwritten"]`` added."""
    entries = json.loads(Path(path).read_text(encoding="utf-8"))["prompts"]
    return [{**entry, "tags": ["handwritten"]} for entry in entries]


# ---------------------------------------------------------------------------------------------- template grammar
def _labels(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` distinct labels."""
    colors, shapes = list(COLORS), list(SHAPES)
    picks = rng.choice(len(colors) * len(shapes), size=count, replace=False)
    return [f"{colors[int(p) // len(shapes)]} {shapes[int(p) % len(shapes)]}" for p in picks]


def _phrase(rng: np.random.Generator, label: str, count: int, tags: set) -> str:
    """``label`` asked ``count`` times: "a red circle", "two red circles", "3 red circles", "red circle"."""
    if count == 1:
        article, tag, _ = ARTICLES[int(rng.choice(len(ARTICLES), p=[w for *_, w in ARTICLES]))]
        tags.add(tag)
        return f"{article} {label}".strip()
    tags.add("plural")
    if rng.random() < 0.5:
        tags.add("count:word")
        return f"{COUNT_WORDS[count]} {label}s"
    tags.add("count:digit")
    return f"{count} {label}s"


def _split(rng: np.random.Generator, total: int, parts: int) -> list[int]:
    """``total`` objects over ``parts`` phrases, each at least one."""
    cuts = sorted(rng.choice(np.arange(1, total), size=parts - 1, replace=False).tolist()) if parts > 1 else []
    bounds = [0, *cuts, total]
    return [bounds[k + 1] - bounds[k] for k in range(parts)]


def _join(rng: np.random.Generator, phrases: list[str], tags: set) -> str:
    if len(phrases) == 1:
        return phrases[0]
    if len(phrases) == 2:
        if rng.random() < 0.6:
            tags.add("and")
            return f"{phrases[0]} and {phrases[1]}"
        tags.add("comma")
        return f"{phrases[0]}, {phrases[1]}"
    style = int(rng.integers(4))
    tags.add(("comma", "comma-and", "and", "comma")[style])
    if style == 0:
        tags.add("and")
        return f"{phrases[0]}, {phrases[1]} and {phrases[2]}"
    if style == 1:
        return f"{phrases[0]}, {phrases[1]}, and {phrases[2]}"
    if style == 2:
        return f"{phrases[0]} and {phrases[1]} and {phrases[2]}"
    return ", ".join(phrases)


def _copula(rng: np.random.Generator, count: int, tags: set) -> str:
    if rng.random() < 0.25:
        tags.add("copula")
        return " is" if count == 1 else " are"
    return ""


def _list_prompt(rng, k, tags):
    total = int(rng.integers(1, MAX_TEMPLATE_OBJECTS + 1))
    parts = int(rng.integers(1, total + 1))
    counts = _split(rng, total, parts)
    labels = _labels(rng, parts)
    phrases = [_phrase(rng, label, count, tags) for label, count in zip(labels, counts)]
    objects = [label for label, count in zip(labels, counts) for _ in range(count)]
    return _join(rng, phrases, tags), objects, [], []


def _pair_prompt(rng, k, tags):
    words, kind = RELATION_FORMS[k % len(RELATION_FORMS)]
    tags.add(f"relation:{words}")
    first = int(rng.integers(1, 3))
    second = int(rng.integers(1, MAX_TEMPLATE_OBJECTS - first + 1))
    a, b = _labels(rng, 2)
    text = f"{_phrase(rng, a, first, tags)}{_copula(rng, first, tags)} {words} {_phrase(rng, b, second, tags)}"
    objects = [a] * first + [b] * second
    relations = [[kind, i, j] for i in range(first) for j in range(first, first + second)]
    return text, objects, relations, []


def _pair_and_free_prompt(rng, k, tags):
    words, kind = RELATION_FORMS[k % len(RELATION_FORMS)]
    tags.add(f"relation:{words}")
    a, b, c = _labels(rng, 3)
    pair = f"{_phrase(rng, a, 1, tags)}{_copula(rng, 1, tags)} {words} {_phrase(rng, b, 1, tags)}"
    free = _phrase(rng, c, 1, tags)
    joiner = (", and ", " and ", ", ")[int(rng.integers(3))]
    tags.add({", and ": "comma-and", " and ": "and", ", ": "comma"}[joiner])
    if rng.random() < 0.5:
        return f"{pair}{joiner}{free}", [a, b, c], [[kind, 0, 1]], []
    return f"{free}{joiner}{pair}", [c, a, b], [[kind, 1, 2]], []


def _chain_prompt(rng, k, tags):
    (w1, k1), (w2, k2) = (RELATION_FORMS[(k + s) % len(RELATION_FORMS)] for s in (0, 3))
    tags.update({f"relation:{w1}", f"relation:{w2}", "chain"})
    a, b, c = _labels(rng, 3)
    text = f"{_phrase(rng, a, 1, tags)} {w1} {_phrase(rng, b, 1, tags)} {w2} {_phrase(rng, c, 1, tags)}"
    return text, [a, b, c], [[k1, 0, 1], [k2, 1, 2]], []


PLACE_SETS = (("left",), ("right",), ("top",), ("bottom",), ("middle",), ("left", "right"), ("right", "left"),
              ("top", "bottom"), ("bottom", "top"), ("left", None), (None, "right"), ("left", "middle", "right"),
              ("right", "middle", "left"), ("middle", "left", "right"), ("left", "right", None))  # fmt: skip


def _places_prompt(rng, k, tags):
    places = PLACE_SETS[k % len(PLACE_SETS)]
    labels = _labels(rng, len(places))
    phrases = []
    for label, place in zip(labels, places):
        phrase = _phrase(rng, label, 1, tags)
        if place is not None:
            tags.add(f"place:{PLACE_FORMS[place]}")
            phrase += " " + PLACE_FORMS[place]
        phrases.append(phrase)
    text = _join(rng, phrases, tags)
    return text, labels, [], [[place, i] for i, place in enumerate(places) if place is not None]


# (builder, share of the set)
STRUCTURES = ((_list_prompt, 0.35), (_pair_prompt, 0.3), (_pair_and_free_prompt, 0.1), (_chain_prompt, 0.1),
              (_places_prompt, 0.15))  # fmt: skip


def _style(rng: np.random.Generator, text: str, tags: set) -> str:
    """The case (lower, Sentence, Title, UPPER) and trailing punctuation people use."""
    case = rng.choice(4, p=[0.5, 0.15, 0.2, 0.15])
    if case == 1:
        text, _ = text[:1].upper() + text[1:], tags.add("sentence-case")
    elif case == 2:
        text, _ = text.title(), tags.add("title-case")
    elif case == 3:
        text, _ = text.upper(), tags.add("upper-case")
    end = rng.choice(["", ".", "!"], p=[0.5, 0.35, 0.15])
    if end:
        tags.add("punctuation")
    return text + str(end)


def template_prompts(count: int = TEMPLATE_SIZE, seed: int = TEMPLATE_SEED) -> list[dict]:
    """``count`` prompts of the template grammar, the same for the same ``seed`` on every machine.

    Each structure (plain lists with counts, a relation between two phrases, a relation plus a free object, a
    chain of two relations, places) takes its share of the set; relation words and place sets rotate so every
    form appears.
    """
    rng = np.random.default_rng([seed, 16])
    builders = [b for b, share in STRUCTURES for _ in range(round(share * count))]
    builders = (builders + [_list_prompt] * count)[:count]
    order = rng.permutation(count)
    seen: dict = {}
    entries = []
    for index in order:
        builder = builders[int(index)]
        k = seen[builder] = seen.get(builder, -1) + 1
        tags = {builder.__name__.strip("_").removesuffix("_prompt")}
        text, objects, relations, places = builder(rng, k, tags)
        prompt = _style(rng, text, tags)
        entries.append(
            {"prompt": prompt, "objects": objects, "relations": relations, "places": places, "tags": sorted(tags)}
        )
    return entries


def prompt_sets(num_prompts: int | None = None) -> dict[str, list[dict]]:
    """The two sets, ``{"handwritten": [...], "template": [...]}``, each cut to its first ``num_prompts``."""
    sets = {"handwritten": load_handwritten(), "template": template_prompts()}
    return {name: entries[:num_prompts] for name, entries in sets.items()}
