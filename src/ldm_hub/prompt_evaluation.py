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

import itertools
import json
import time
from collections import Counter
from collections.abc import Sequence
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


# ---------------------------------------------------------------------------------------------- scoring
SEEDS_PER_PROMPT = 4
# The bars of issue 16: the share of images drawn exactly as asked, per set.
PROMPT_THRESHOLDS = {"handwritten_exact": 0.9, "template_exact": 0.9}


def placement_right(entry: dict, boxes: Sequence[Sequence[float]]) -> bool:
    """Whether boxes (one per object of ``entry``, in its order) are placed as the entry asks: relations by box
    centre (x for left / right, y for above / below); a place puts the centre in that half (the middle third for
    "middle") and beyond every object not placed there ("middle": between those on the left and the right)."""
    cx = [(b[0] + b[2]) / 2 for b in boxes]
    cy = [(b[1] + b[3]) / 2 for b in boxes]
    for kind, i, j in entry["relations"]:
        ok = {"left": cx[i] < cx[j], "right": cx[i] > cx[j], "above": cy[i] < cy[j], "below": cy[i] > cy[j]}[kind]
        if not ok:
            return False
    where = {i: kind for kind, i in entry["places"]}
    for kind, i in entry["places"]:
        others = [k for k in range(len(boxes)) if k != i and where.get(k) != kind]
        if kind == "middle":
            ok = 1 / 3 <= cx[i] <= 2 / 3
            ok = ok and all(cx[k] < cx[i] for k in others if where.get(k) == "left")
            ok = ok and all(cx[i] < cx[k] for k in others if where.get(k) == "right")
        else:
            centre = {"left": cx, "right": cx, "top": cy, "bottom": cy}[kind]
            first = kind in ("left", "top")
            ok = centre[i] <= 0.5 if first else centre[i] >= 0.5
            ok = ok and all((centre[i] < centre[k]) if first else (centre[i] > centre[k]) for k in others)
        if not ok:
            return False
    return True


def score_prompt(entry: dict, detections: Sequence[dict]) -> dict:
    """``{"labels_right", "placement_right", "exact"}`` for one image: the detected colours + shapes are the
    requested multiset, and some assignment of the detections to the objects (same labels) places them as asked
    (``placement_right`` is None when the labels are wrong)."""
    wanted = list(entry["objects"])
    found = [d["label"] for d in detections]
    if Counter(found) != Counter(wanted):
        return {"labels_right": False, "placement_right": None, "exact": False}
    placed = False
    for order in itertools.permutations(range(len(detections))):
        if all(found[j] == wanted[i] for i, j in enumerate(order)):
            if placement_right(entry, [detections[j]["box"] for j in order]):
                placed = True
                break
    return {"labels_right": True, "placement_right": placed, "exact": placed}


def summarize(entries: Sequence[dict], scores: Sequence[Sequence[dict]]) -> dict:
    """Set-level figures: images exactly as asked, labels right, placement right among those with the right
    labels (prompts that ask for a placement), prompts right on every seed, and exactness per tag."""
    flat = [(e, s) for e, per_seed in zip(entries, scores) for s in per_seed]
    placed = [s for e, s in flat if (e["relations"] or e["places"]) and s["labels_right"]]
    tags: dict[str, list[bool]] = {}
    for e, s in flat:
        for tag in e["tags"]:
            tags.setdefault(tag, []).append(s["exact"])
    return {
        "exact": float(np.mean([s["exact"] for _, s in flat])),
        "labels": float(np.mean([s["labels_right"] for _, s in flat])),
        "placement_given_labels": float(np.mean([s["placement_right"] for s in placed])) if placed else None,
        "prompts_exact_on_every_seed": float(np.mean([all(s["exact"] for s in per) for per in scores])),
        "images": len(flat),
        "by_tag": {tag: round(float(np.mean(v)), 4) for tag, v in sorted(tags.items())},
    }


def evaluate_prompts(
    model,
    num_prompts: int | None = None,
    seed: int = 0,
    steps: int = 50,
    batch_size: int = 16,
    device: str = "cpu",
    seeds_per_prompt: int = SEEDS_PER_PROMPT,
    save_images: str | None = None,
    progress: bool = True,
) -> dict:
    """Draw every prompt of both sets with ``seeds_per_prompt`` seeds (``seed`` … ``seed + k − 1``; the seed
    plans the layout and draws z_T) and score each image with the shapes detector (:func:`score_prompt`).

    ``model`` is a pipeline folder / Hub id or a loaded :class:`~ldm_hub.LDMPipeline`. A prompt the model
    refuses counts as wrong on every seed and is listed with its error.
    """
    import torch

    from .evaluation import _to_pil, check_thresholds, detect_shapes

    if isinstance(model, (str, Path)):
        from .pipelines.ldm_pipeline import LDMPipeline

        pipe = LDMPipeline.from_pretrained(model).to(device)
    else:
        pipe, model = model, getattr(model, "name_or_path", type(model).__name__)
    pipe.set_progress_bar_config(disable=True)
    start = time.perf_counter()
    metrics, details = {}, {}
    for name, entries in prompt_sets(num_prompts).items():
        jobs, refused = [], {}
        for k, entry in enumerate(entries):
            try:
                pipe.layout_planner.parse_prompt(entry["prompt"])
            except ValueError as e:
                refused[k] = str(e)
                continue
            jobs += [(k, s) for s in range(seeds_per_prompt)]
        scores: list[list[dict]] = [[] for _ in entries]
        found: list[list[list[str]]] = [[] for _ in entries]
        for b in range(0, len(jobs), batch_size):
            chunk = jobs[b : b + batch_size]
            images = pipe(
                prompt=[entries[k]["prompt"] for k, _ in chunk],
                generator=[torch.Generator(device).manual_seed(seed + s) for _, s in chunk],
                num_inference_steps=steps,
                output_type="np",
            ).images
            for (k, s), array in zip(chunk, images):
                image = _to_pil(array)
                detections = detect_shapes(image)
                scores[k].append(score_prompt(entries[k], detections))
                found[k].append([d["label"] for d in detections])
                if save_images:
                    folder = Path(save_images) / name
                    folder.mkdir(parents=True, exist_ok=True)
                    image.save(folder / f"{k:03d}-seed{seed + s}.png")
            if progress:
                print(f"  {name}: {min(b + batch_size, len(jobs))}/{len(jobs)} images", flush=True)
        for k in refused:
            scores[k] = [{"labels_right": False, "placement_right": None, "exact": False}] * seeds_per_prompt
        summary = summarize(entries, scores)
        metrics[f"{name}_exact"] = summary.pop("exact")
        metrics[f"{name}_labels"] = summary.pop("labels")
        details[name] = {
            **summary,
            "prompts": len(entries),
            "refused": [{"prompt": entries[k]["prompt"], "error": e} for k, e in refused.items()],
            "wrong": [
                {"prompt": e["prompt"], "objects": e["objects"], "seeds_right": sum(s["exact"] for s in per),
                 "detected": det}
                for e, per, det in zip(entries, scores, found) if not all(s["exact"] for s in per)
            ],
        }  # fmt: skip
    result = {
        "model": str(model),
        "task": "prompts",
        "num_prompts": {name: d["prompts"] for name, d in details.items()},
        "seeds_per_prompt": seeds_per_prompt,
        "seed": seed,
        "steps": steps,
        "metrics": metrics,
        "thresholds": check_thresholds("prompts", metrics, PROMPT_THRESHOLDS),
        "details": details,
        "seconds": round(time.perf_counter() - start, 2),
    }
    result["passed"] = all(t["passed"] for t in result["thresholds"].values())
    return result
