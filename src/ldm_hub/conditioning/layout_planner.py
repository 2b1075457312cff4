"""Captions → layouts → segmentation maps, so one spatially conditioned model serves text, layout and maps.

A layout-to-image model that reads its boxes as extra input channels (a :class:`~ldm_hub.SemanticMapEncoder`
over a map with one id per object label) places objects far more reliably than one that reads them as tokens
through cross-attention; the calibration of issue 4 measured box IoU 0.88 against 0.09 after the same CPU
time. :class:`LayoutPlanner` is the component that lets such a model take the other two kinds of prompt:

- ``layout → map``: the boxes are filled in order with ``1 + label index`` (0 is the background);
- ``caption → layout``: the caption is parsed by the planner's grammar (:mod:`.prompt_grammar`: counts, articles,
  commas and "and", relation words such as "to the left of" or "above", place words such as "on the left", in
  any case and punctuation), so every object it names gets a box drawn from a layout prior fit on the training
  layouts — box sides and aspect ratios within the observed range, at least ``min_gap`` apart. A caption with
  no relation or place words is placed left to right in the order written (the order the captions of the
  training data use); relations and places are honoured in two dimensions — box centre x for left / right,
  centre y for above / below — and objects they leave unordered go left to right as written. This is the
  two-stage text → layout → image design of layout-planning text-to-image systems, with a sampled geometric
  prior as the planner; the planner knows only its vocabulary, so a word outside it is an error that lists
  what it understands, as is a caption naming more objects than the model was trained with.

Example:
    >>> planner = LayoutPlanner(labels=["red circle", "blue square"])
    >>> planner.parse("a blue square and a red circle")
    ['blue square', 'red circle']
    >>> layout = planner.plan(["a red circle and a blue square"], seed=0)[0]
    >>> [obj["label"] for obj in layout], layout[0]["box"][0] < layout[1]["box"][0]
    (['red circle', 'blue square'], True)
    >>> above = planner.plan(["a red circle above two blue squares"], seed=0)[0]
    >>> [obj["label"] for obj in above], all(above[0]["box"][3] < obj["box"][1] for obj in above[1:])
    (['red circle', 'blue square', 'blue square'], True)
    >>> import numpy as np
    >>> np.asarray(planner.rasterize([[{"label": "blue square", "box": [0, 0, 0.5, 0.5]}]], (4, 4))[0]).tolist()
    [[2, 2, 0, 0], [2, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cached_property

import numpy as np
import PIL.Image
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config

from ..config_component import ConfigComponent, register_with_diffusers
from ..hub_mixin import HubMixin
from .inputs import check_box
from .prompt_grammar import ParsedPrompt, PromptGrammar

# Tries to place one box before the whole layout is drawn again, and whole-layout tries before giving up.
PLACEMENT_TRIES = 50
LAYOUT_TRIES = 200


def layout_to_segmentation(layout, size: tuple[int, int], categories: Sequence[str]) -> PIL.Image.Image:
    """Draw a layout as an index map (PIL mode "L"): 0 = background, box pixels = 1 + the label's index.

    Boxes are filled in order, so a later box covers an earlier one where they overlap.

    Example:
        >>> m = layout_to_segmentation([{"label": "b", "box": [0, 0, 0.5, 0.5]}], (4, 4), ["a", "b"])
        >>> np.asarray(m).tolist()
        [[2, 2, 0, 0], [2, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    """
    width, height = size
    if len(categories) > 255:
        raise ValueError(f"an 'L' index map holds at most 255 categories, got {len(categories)}")
    index = {name: i + 1 for i, name in enumerate(categories)}
    canvas = np.zeros((height, width), dtype=np.uint8)
    for k, obj in enumerate(layout):
        if not isinstance(obj, dict) or "label" not in obj or "box" not in obj:
            raise ValueError(f"layout object {k} must be {{'label': ..., 'box': [x0, y0, x1, y1]}}, got {obj!r}")
        label = obj["label"]
        if isinstance(label, (int, np.integer)) and not isinstance(label, bool) and 0 <= label < len(categories):
            label = categories[int(label)]
        if label not in index:
            raise ValueError(
                f"object {k} label {label!r} is not one of the {len(categories)} categories, "
                f"e.g. {list(categories)[:4]}"
            )
        x0, y0, x1, y1 = check_box(obj["box"], f"object {k} ")  # the one box rule
        canvas[round(y0 * height) : round(y1 * height), round(x0 * width) : round(x1 * width)] = index[label]
    return PIL.Image.fromarray(canvas, mode="L")


class LayoutPlanner(HubMixin, ConfigComponent, ConfigMixin):
    r"""Caption → layout (a fitted geometric prior) and layout → index map, for spatially conditioned models.

    Sits in an :class:`~ldm_hub.LDMPipeline`'s ``layout_planner`` slot beside a semantic-map model whose map
    ids are ``1 + label index``; the pipeline then accepts ``prompt=`` and ``layout=`` as well as
    ``segmentation=``. ``save_pretrained(dir)`` writes ``planner_config.json``.

    Args:
        labels: the object vocabulary; map id ``i + 1`` is ``labels[i]``. Captions name objects with these
            phrases (``"a red circle and a blue square"``, ``"two red circles above a blue square"``; the words of
            :meth:`vocabulary`).
        min_side, max_side: range of a box's width, as a fraction of the image width.
        min_aspect, max_aspect: range of height / width (1 for square boxes).
        min_gap: smallest gap between two boxes, as a fraction of the image side.
        max_objects: most objects a caption may name.

    Example:
        >>> LayoutPlanner(labels=["red circle"]).plan(["a red circle"], seed=1)[0][0]["label"]
        'red circle'
    """

    config_name = "planner_config.json"

    @register_to_config
    def __init__(
        self,
        labels: list[str] | None = None,
        min_side: float = 0.22,
        max_side: float = 0.42,
        min_aspect: float = 1.0,
        max_aspect: float = 1.0,
        min_gap: float = 0.03,
        max_objects: int = 3,
    ):
        if not labels or not all(isinstance(label, str) and label.strip() for label in labels):
            raise ValueError(f"`labels` must be a non-empty list of non-empty strings, got {labels!r}")
        if len(set(labels)) != len(labels):
            raise ValueError("`labels` has duplicates")
        if not 0 < min_side <= max_side <= 1:
            raise ValueError(f"need 0 < min_side <= max_side <= 1, got {min_side}, {max_side}")
        if not 0 < min_aspect <= max_aspect:
            raise ValueError(f"need 0 < min_aspect <= max_aspect, got {min_aspect}, {max_aspect}")
        if not 0 <= min_gap < 1 or not isinstance(max_objects, int) or max_objects < 1:
            raise ValueError(f"need 0 <= min_gap < 1 and max_objects >= 1, got {min_gap}, {max_objects}")

    @classmethod
    def fit(cls, layouts: Iterable[Sequence[dict]], labels: Sequence[str]) -> LayoutPlanner:
        """The prior of a set of training layouts: side, aspect and gap ranges and the most objects seen.

        Example:
            >>> boxes = [{"label": "a", "box": [0, 0, 0.2, 0.2]}, {"label": "a", "box": [0.5, 0, 0.9, 0.4]}]
            >>> p = LayoutPlanner.fit([boxes], ["a"])
            >>> p.config.min_side, p.config.max_side, p.config.min_gap, p.config.max_objects
            (0.2, 0.4, 0.3, 2)
        """
        sides, aspects, gaps, most = [], [], [], 0
        for layout in layouts:
            boxes = [[float(v) for v in obj["box"]] for obj in layout]
            most = max(most, len(boxes))
            for x0, y0, x1, y1 in boxes:
                if x1 > x0 and y1 > y0:
                    sides.append(x1 - x0)
                    aspects.append((y1 - y0) / (x1 - x0))
            for i, a in enumerate(boxes):
                for b in boxes[i + 1 :]:
                    gaps.append(max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3]))
        if not sides:
            raise ValueError("no boxes with a positive area to fit a layout prior on")
        return cls(
            labels=list(labels),
            min_side=round(min(sides), 6),
            max_side=round(max(sides), 6),
            min_aspect=round(min(aspects), 6),
            max_aspect=round(max(aspects), 6),
            min_gap=round(max(0.0, min(gaps)), 6) if gaps else 0.0,
            max_objects=most,
        )

    @property
    def labels(self) -> list[str]:
        return list(self.config.labels)

    @cached_property
    def grammar(self) -> PromptGrammar:
        """The caption grammar over this planner's labels (:mod:`ldm_hub.conditioning.prompt_grammar`)."""
        return PromptGrammar(self.labels, self.config.max_objects)

    def vocabulary(self) -> dict[str, list[str]]:
        """The words captions may use, by role: colours, shapes, counts, relations, places, fillers."""
        return self.grammar.vocabulary()

    def parse_prompt(self, caption: str) -> ParsedPrompt:
        """The objects, relations and places ``caption`` asks for; an error naming what the model understands
        for a word outside the vocabulary, and naming the limit for more than ``max_objects`` objects."""
        return self.grammar.parse(caption)

    def parse(self, caption: str) -> list[str]:
        """The labels ``caption`` names, in the order written (counts expanded); see :meth:`parse_prompt`."""
        return list(self.parse_prompt(caption).objects)

    def _sample_boxes(self, rng: np.random.Generator, count: int) -> list[list[float]]:
        c = self.config
        for _ in range(LAYOUT_TRIES):
            boxes: list[list[float]] = []
            for _ in range(count):
                for _ in range(PLACEMENT_TRIES):
                    w = rng.uniform(c.min_side, c.max_side)
                    h = min(1.0, w * rng.uniform(c.min_aspect, c.max_aspect))
                    x0, y0 = rng.uniform(0.0, 1.0 - w), rng.uniform(0.0, 1.0 - h)
                    box = [x0, y0, x0 + w, y0 + h]
                    if all(_apart(box, other, c.min_gap) for other in boxes):
                        boxes.append(box)
                        break
                else:
                    break
            if len(boxes) == count:
                return sorted(boxes, key=lambda b: (b[0] + b[2], b[1]))  # left to right by centre
        raise ValueError(f"could not place {count} boxes of sides {c.min_side}-{c.max_side} {c.min_gap} apart")

    def _place(self, rng: np.random.Generator, parsed: ParsedPrompt, caption: str) -> list[list[float]]:
        """Boxes for the objects of ``parsed``, one per object in order, honouring its relations and places.

        Each axis is a partial order (x: left of, y: above): an ordered pair is at least ``min_gap`` apart on
        that axis, box to box. Objects neither order separates go left to right as written. Box sizes come
        from the prior (later tries favour smaller boxes, so long chains fit); then each axis's start
        positions are drawn in topological order inside the bounds the order and the places leave.
        """
        c, n = self.config, len(parsed.objects)
        orders = parsed.orders()
        before = {axis: _closure(n, edges) for axis, edges in orders.items()}
        for axis, words in (("x", "left and right of"), ("y", "above and below")):
            if any(before[axis][i][i] for i in range(n)):
                raise ValueError(
                    f"the caption {caption!r} asks for positions that contradict each other (an object both "
                    f"{words} another)"
                )
        for i in range(n):
            for j in range(i + 1, n):
                if not any(reach[i][j] or reach[j][i] for reach in before.values()):
                    orders["x"].add((i, j))
                    before["x"] = _closure(n, orders["x"])
        halves = parsed.halves()
        for attempt in range(LAYOUT_TRIES):
            top = c.max_side - (c.max_side - c.min_side) * attempt / LAYOUT_TRIES
            widths = [rng.uniform(c.min_side, top) for _ in range(n)]
            sizes = {"x": widths, "y": [min(1.0, w * rng.uniform(c.min_aspect, c.max_aspect)) for w in widths]}
            starts = {}
            for axis, size in sizes.items():
                spans = {i: (lo, hi) for i, (a, lo, hi) in halves.items() if a == axis}
                starts[axis] = _positions(rng, size, orders[axis], spans, c.min_gap)
                if starts[axis] is None:
                    break
            else:
                x, y, w, h = starts["x"], starts["y"], sizes["x"], sizes["y"]
                return [[x[i], y[i], x[i] + w[i], y[i] + h[i]] for i in range(n)]
        raise ValueError(
            f"could not place the {n} objects of {caption!r} as asked with box sides {c.min_side}-{c.max_side} "
            f"{c.min_gap} apart"
        )

    def plan(
        self,
        captions: str | Sequence[str],
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        seed: int | None = None,
    ) -> list[list[dict]]:
        """One layout per caption: its objects in the order named, placed as it asks (left to right when it
        names no relation or place).

        ``generator`` (one, or one per caption) or ``seed`` makes the plan reproducible; each layout draws its
        own seed from the generator, so a list of generators gives each caption the plan it gets alone.
        """
        captions = [captions] if isinstance(captions, str) else list(captions)
        if isinstance(generator, (list, tuple)) and len(generator) != len(captions):
            raise ValueError(f"got {len(generator)} generators for {len(captions)} captions")
        layouts = []
        base = np.random.default_rng(seed) if generator is None else None
        for i, caption in enumerate(captions):
            parsed = self.parse_prompt(caption)
            if generator is None:
                rng = base
            else:
                g = generator[i] if isinstance(generator, (list, tuple)) else generator
                rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=g, device=g.device)))
            if parsed.placed:
                boxes = self._place(rng, parsed, caption)
            else:  # the plan of captions without relation words is the one the planner always made
                boxes = self._sample_boxes(rng, len(parsed.objects))
            layouts.append(
                [{"label": label, "box": [round(v, 6) for v in box]} for label, box in zip(parsed.objects, boxes)]
            )
        return layouts

    def rasterize(self, layouts: Sequence[Sequence[dict]], size: tuple[int, int]) -> list[PIL.Image.Image]:
        """Index maps (``size`` = (width, height)) with id ``1 + label index`` inside each box."""
        return [layout_to_segmentation(layout, size, self.labels) for layout in layouts]


def _closure(n: int, edges: Iterable[tuple[int, int]]) -> list[list[bool]]:
    """reach[i][j]: j is after i through the edges (Floyd–Warshall on ≤ a handful of objects)."""
    reach = [[False] * n for _ in range(n)]
    for i, j in edges:
        reach[i][j] = True
    for k in range(n):
        for i in range(n):
            if reach[i][k]:
                for j in range(n):
                    reach[i][j] = reach[i][j] or reach[k][j]
    return reach


def _positions(rng, size: Sequence[float], edges: set, spans: dict, gap: float) -> list[float] | None:
    """Start positions on one axis: ``p_i + size_i + gap <= p_j`` for every edge (i, j), each box inside [0, 1]
    and its centre inside ``spans[i]`` = (lo, hi) (``gap`` inside a bound that is not the border); None when
    the sizes do not fit."""
    n = len(size)
    low = [0.0] * n
    high = [1.0 - s for s in size]
    for i, (lo, hi) in spans.items():
        low[i] = max(low[i], lo - size[i] / 2 + (gap if lo > 0 else 0.0))
        high[i] = min(high[i], hi - size[i] / 2 - (gap if hi < 1 else 0.0))
    order, left = [], set(range(n))
    while left:  # topological order, lowest index first (the graph is acyclic: checked by the caller)
        ready = min(i for i in left if not any((k, i) in edges for k in left))
        order.append(ready)
        left.remove(ready)
    for j in order:
        for i, k in edges:
            if k == j:
                low[j] = max(low[j], low[i] + size[i] + gap)
    for i in reversed(order):
        for k, j in edges:
            if k == i:
                high[i] = min(high[i], high[j] - gap - size[i])
    if any(lo > hi + 1e-9 for lo, hi in zip(low, high)):
        return None
    start = [0.0] * n
    for j in order:
        floor = max([low[j]] + [start[i] + size[i] + gap for i, k in edges if k == j])
        start[j] = float(rng.uniform(floor, max(floor, high[j])))
    return start


def _apart(a: Sequence[float], b: Sequence[float], gap: float) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


register_with_diffusers(LayoutPlanner)
