"""The caption grammar of a :class:`~ldm_hub.LayoutPlanner`: captions as people write them → objects and where.

A caption is a sequence of object phrases joined by separators, relation words and place words::

    caption  := item (separator item)*          separator: "," ";" "." ":" "!" "?" "&" "and" ", and" "next to" "beside"
    item     := [place] phrase [place] (relation [place] phrase [place])*
    phrase   := [article] [count] colour shape  article: a, an, the; count: one … three, 1 … 3 (or "one"); shape
                                                singular or plural ("circle", "circles")
    relation := "to the left of" | "on the left of" | "left of" | "to the right of" | "on the right of" | "right of"
              | "above" | "over" | "on top of" | "below" | "under" | "beneath" | "underneath"
    place    := "on the left" | "to the left" | "on the right" | "to the right" | "in the middle" | "in the center"
              | "in the centre" | "at the top" | "at the bottom"

Case and trailing punctuation do not matter; "there", "is" and "are" are filler words. A count makes that many
objects ("two red circles"). A relation links the phrase just before it to the phrase just after it — every
object of the one to every object of the other ("two red circles above a blue square": both circles above the
square); chains work ("A above B above C"). A place after a phrase belongs to it; a place at the start or after
a separator belongs to the next phrase ("on the left, a red circle"). Nothing is dropped: a word outside the
vocabulary, a colour without a shape, a relation without an object on both sides is a ``ValueError`` that lists
what the grammar accepts.

Example:
    >>> grammar = PromptGrammar(["red circle", "blue square", "green triangle"], max_objects=3)
    >>> parsed = grammar.parse("Two red circles to the right of a blue square.")
    >>> parsed.objects, parsed.relations
    (('red circle', 'red circle', 'blue square'), (('right', 0, 2), ('right', 1, 2)))
    >>> grammar.parse("a green triangle on the left and a blue square").places
    (('left', 0),)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

RELATIONS: dict[str, str] = {
    "to the left of": "left", "on the left of": "left", "left of": "left",
    "to the right of": "right", "on the right of": "right", "right of": "right",
    "above": "above", "over": "above", "on top of": "above",
    "below": "below", "under": "below", "beneath": "below", "underneath": "below",
}  # fmt: skip
PLACES: dict[str, str] = {
    "on the left": "left", "to the left": "left", "on the right": "right", "to the right": "right",
    "in the middle": "middle", "in the center": "middle", "in the centre": "middle",
    "at the top": "top", "at the bottom": "bottom",
}  # fmt: skip
ARTICLES = ("a", "an", "the")
COUNT_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
SEPARATORS = (",", ";", ".", ":", "!", "?", "&", "and", "next to", "beside")
FILLERS = ("there", "is", "are")
# Which axis a relation or place orders, and whether the object named first comes first on it (x: left to
# right, y: top to bottom).
AXIS = {"left": ("x", True), "right": ("x", False), "above": ("y", True), "below": ("y", False),
        "top": ("y", True), "bottom": ("y", False), "middle": ("x", None)}  # fmt: skip
_TOKEN = re.compile(r"[^\W\d_]+|\d+|[^\w\s]")


@dataclass(frozen=True)
class ParsedPrompt:
    """What a caption asks for: ``objects`` (labels, in the order written, counts expanded), ``relations``
    ``(kind, i, j)`` (object i is left / right / above / below object j) and ``places`` ``(kind, i)`` (object i
    on the left / right / in the middle / at the top / at the bottom)."""

    objects: tuple[str, ...]
    relations: tuple[tuple[str, int, int], ...] = ()
    places: tuple[tuple[str, int], ...] = ()

    @property
    def placed(self) -> bool:
        """Whether the caption asks for any placement (else the objects go left to right as written)."""
        return bool(self.relations or self.places)

    def orders(self) -> dict[str, set[tuple[int, int]]]:
        """``{"x": {(i, j), ...}, "y": ...}``: object i comes before object j on that axis (left of / above).

        A place orders its object against every object not in the same place ("on the left": left of all the
        others); "in the middle" only after the objects on the left and before those on the right.
        """
        out: dict[str, set[tuple[int, int]]] = {"x": set(), "y": set()}
        for kind, i, j in self.relations:
            axis, first = AXIS[kind]
            out[axis].add((i, j) if first else (j, i))
        where = {i: kind for kind, i in self.places}
        for kind, i in self.places:
            axis, first = AXIS[kind]
            for k in range(len(self.objects)):
                other = where.get(k)
                if k == i or other == kind:
                    continue
                if first is None:  # the middle: after the objects on the left, before those on the right
                    if other in ("left", "right"):
                        out[axis].add((k, i) if other == "left" else (i, k))
                else:
                    out[axis].add((i, k) if first else (k, i))
        return out

    def halves(self) -> dict[int, tuple[str, float, float]]:
        """``{i: (axis, lo, hi)}``: the range of object i's box centre a place asks for (the left half, …)."""
        spans = {"left": (0.0, 0.5), "right": (0.5, 1.0), "middle": (1 / 3, 2 / 3), "top": (0.0, 0.5),
                 "bottom": (0.5, 1.0)}  # fmt: skip
        return {i: (AXIS[kind][0], *spans[kind]) for kind, i in self.places}


def _plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("s", "x", "z", "ch", "sh")) else "s")


class PromptGrammar:
    """The grammar above over a label vocabulary (``"<colour> <shape>"`` phrases; more words before the shape
    work the same way), refusing captions of more than ``max_objects`` objects."""

    def __init__(self, labels: Sequence[str], max_objects: int):
        self.labels = list(labels)
        self.max_objects = max_objects
        self.colours: list[str] = []
        self.shapes: list[str] = []
        self._label_words: dict[tuple[str, ...], str] = {}
        for label in self.labels:
            *modifiers, noun = label.lower().split()
            self._label_words[(*modifiers, noun)] = label
            self.colours += [m for m in modifiers if m not in self.colours]
            self.shapes += [noun] if noun not in self.shapes else []
        self._nouns = {noun: noun for noun in self.shapes} | {_plural(noun): noun for noun in self.shapes}
        counts = {word: n for n, word in enumerate(COUNT_WORDS, 1)}
        phrases: dict[tuple[str, ...], tuple[str, object]] = {}
        for table, kind in ((RELATIONS, "relation"), (PLACES, "place")):
            phrases |= {tuple(words.split()): (kind, value) for words, value in table.items()}
        phrases |= {(w,): ("separator", w) for w in SEPARATORS if " " not in w}
        phrases |= {tuple(w.split()): ("separator", w) for w in SEPARATORS if " " in w}
        phrases |= {(w,): ("filler", w) for w in FILLERS} | {(w,): ("article", w) for w in ARTICLES}
        phrases |= {(w,): ("count", n) for w, n in counts.items()}
        phrases |= {(w,): ("colour", w) for w in self.colours} | {(w,): ("shape", n) for w, n in self._nouns.items()}
        self._phrases = phrases
        self._longest = max(len(p) for p in phrases)

    # ------------------------------------------------------------------ what the grammar accepts
    def vocabulary(self) -> dict[str, list[str]]:
        """The words the grammar accepts by role (for errors and model cards)."""
        top = self.max_objects
        return {
            "colours": list(self.colours),
            "shapes": [*self.shapes, *(_plural(s) for s in self.shapes)],
            "counts": [*ARTICLES, *COUNT_WORDS[:top], *(str(n) for n in range(1, top + 1))],
            "relations": list(RELATIONS),
            "places": list(PLACES),
            "fillers": [*SEPARATORS, *FILLERS],
        }

    def describe(self) -> str:
        """One paragraph naming every accepted word and the object limit."""
        v = self.vocabulary()
        quoted = {
            k: ", ".join(f"'{w}'" if " " in w or not w.isalnum() else w for w in words) for k, words in v.items()
        }
        example = f"two {self.labels[0]}s to the left of a {self.labels[-1]}"
        return (
            f"This model understands: colours {quoted['colours']}; shapes {quoted['shapes']}; counts "
            f"{quoted['counts']} (at most {self.max_objects} objects in all); relations {quoted['relations']}; places "
            f"{quoted['places']}; filler words and punctuation {quoted['fillers']}. Every object is a colour and "
            f"a shape, e.g. '{example}'."
        )

    # ------------------------------------------------------------------ parsing
    def tokens(self, caption: str) -> list[tuple[str, object, str]]:
        """``(kind, value, words)`` for each phrase of the vocabulary, longest first; an error naming every word
        outside it."""
        words = _TOKEN.findall(caption.lower())
        out, unknown, k = [], [], 0
        while k < len(words):
            for size in range(min(self._longest, len(words) - k), 0, -1):
                key = tuple(words[k : k + size])
                if key in self._phrases:
                    out.append((*self._phrases[key], " ".join(key)))
                    k += size
                    break
            else:
                if words[k].isdigit():
                    out.append(("count", int(words[k]), words[k]))
                elif words[k] not in unknown:
                    unknown.append(words[k])
                k += 1
        if unknown:
            names = ", ".join(repr(w) for w in unknown)
            if not any(kind == "shape" for kind, _, _ in out):
                raise ValueError(
                    f"the caption {caption!r} names none of this model's {len(self.labels)} objects (unknown "
                    f"words: {names}). {self.describe()}"
                )
            raise ValueError(
                f"the caption {caption!r} has words this model cannot draw: {names} (nothing is dropped "
                f"silently). {self.describe()}"
            )
        return out

    def parse(self, caption: str) -> ParsedPrompt:
        """The objects, relations and places ``caption`` asks for (see the module docstring)."""
        if not isinstance(caption, str):
            raise TypeError(f"a caption must be a str, got {type(caption).__name__}")
        objects: list[str] = []
        relations: list[tuple[str, int, int]] = []
        places: dict[int, str] = {}
        phrase: list[tuple[str, object, str]] = []  # the current phrase's article / count / colours
        last: list[int] | None = None  # the objects of the phrase before, while nothing separates it
        relation: tuple[str, list[int], str] | None = None  # a relation waiting for its second phrase
        place: tuple[str, str] | None = None  # a place waiting for its phrase

        def fail(message: str):
            raise ValueError(f"the caption {caption!r}: {message}. {self.describe()}")

        for kind, value, words in self.tokens(caption):
            if kind == "filler":
                continue
            if kind in ("article", "count", "colour"):
                if kind != "colour" and any(k == "colour" for k, _, _ in phrase):
                    fail(f"'{words}' comes after a colour; write the count first ('two red circles')")
                if kind != "colour" and any(k == kind or k == "count" for k, _, _ in phrase):
                    fail(f"'{words}' follows another count or article")
                phrase.append((kind, value, words))
                continue
            if kind == "shape":
                colours = [w for k, w, _ in phrase if k == "colour"]
                label = self._label_words.get((*colours, value))
                if label is None:
                    if not colours:
                        fail(f"'{words}' needs a colour ({', '.join(self.colours)})")
                    fail(f"this model has no '{' '.join([*colours, str(value)])}'")
                count = next((int(v) for k, v, _ in phrase if k == "count"), 1)
                if count < 1:
                    fail(f"'{words}' asks for {count} objects; ask for at least one")
                group = list(range(len(objects), len(objects) + count))
                objects += [label] * count
                if relation is not None:
                    rel, before, _ = relation
                    relations += [(rel, i, j) for i in before for j in group]
                    relation = None
                if place is not None:
                    places.update({i: place[0] for i in group})
                    place = None
                phrase, last = [], group
                continue
            if phrase:
                fail(f"'{phrase[-1][2]}' needs a shape after it ({', '.join(self.shapes)})")
            if kind == "relation":
                if last is None or relation is not None:
                    fail(f"'{words}' needs an object right before it")
                if place is not None:
                    fail(f"'{place[1]}' names no object")
                relation = (str(value), last, words)
            elif kind == "place":
                if last is not None and relation is None and place is None and not any(i in places for i in last):
                    places.update({i: str(value) for i in last})  # another place belongs to the next phrase
                elif place is None and relation is None:
                    place = (str(value), words)
                else:
                    fail(f"'{words}' follows '{(place or relation)[-1]}' with no object between them")
            else:  # a separator
                if relation is not None:
                    fail(f"'{relation[2]}' needs an object right after it")
                last = None
        if phrase:
            fail(f"'{phrase[-1][2]}' needs a shape after it ({', '.join(self.shapes)})")
        if relation is not None:
            fail(f"'{relation[2]}' needs an object right after it")
        if place is not None:
            fail(f"'{place[1]}' names no object")
        if not objects:
            raise ValueError(
                f"the caption {caption!r} names none of this model's {len(self.labels)} objects. {self.describe()}"
            )
        if len(objects) > self.max_objects:
            raise ValueError(
                f"the caption {caption!r} names {len(objects)} objects; this model was trained on at most "
                f"{self.max_objects} (ask for {self.max_objects} or fewer)"
            )
        return ParsedPrompt(tuple(objects), tuple(relations), tuple((kind, i) for i, kind in sorted(places.items())))
