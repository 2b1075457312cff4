"""y for layout-to-image: bounding boxes → the token sequence τ_θ reads (paper §4.3.1, App. D.3; layout2img).

A layout is a list of objects ``{"label": "red circle" or a category id, "box": [x0, y0, x1, y1]}`` with the
corners in [0, 1] and the origin at the top left. :class:`LayoutTokenizer` turns it into the sequence of
taming-transformers' ``ObjectsBoundingBoxConditionalBuilder`` that the CompVis layout2img model was trained on:

    per object   [category, token(x0, y0), token(x1, y1)]      token(x, y) = round(y·(G−1))·G + round(x·(G−1))
    padding      [pad, pad, pad] up to ``max_objects``          G = ⌊√vocab_size⌋ sections per side
    crop         [token(0, 0), token(1, 1)]                     pad = vocab_size − 1

so 30 objects give 3·30 + 2 = 92 tokens. The layout encoder τ_θ is then a plain :class:`~ldm_hub.LDMBertModel`
over these ids (vocab 8192, 92 positions, 16 layers × 512), cross-attended by ε_θ; its unconditional input for
classifier-free guidance is the all-pad sequence (:meth:`LayoutTokenizer.unconditional`).
"""

from __future__ import annotations

import math
import numbers

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config

from ..config_component import ConfigComponent, register_with_diffusers
from ..hub_mixin import HubMixin
from .inputs import OBJECT_KEYS, as_layout_batch, check_box  # noqa: F401  (as_layout_batch: public here too)

# Values per object in the token sequence: category, top-left corner, bottom-right corner.
TOKENS_PER_OBJECT = 3
# The crop box the tokens describe when ``encode_crop`` (always the whole image here).
FULL_CROP = (0.0, 0.0, 1.0, 1.0)
# How many category names an "unknown category" error lists.
_KNOWN_SHOWN = 8


class LayoutTokenizer(HubMixin, ConfigComponent, ConfigMixin):
    r"""Bounding-box layouts → token ids for τ_θ (taming's ``ObjectsBoundingBoxConditionalBuilder``).

    A saveable config object: ``save_pretrained(dir)`` writes ``tokenizer_config.json`` (the category names
    included), ``from_pretrained(dir)`` reads it back; in an :class:`~ldm_hub.LDMPipeline` it sits in the
    ``tokenizer`` slot beside the layout encoder.

    Differences from the training-time builder, all deliberate: objects keep the order they are given in (the
    original shuffles them as augmentation); more than ``max_objects`` objects is an error (the original
    truncates with a warning, silently dropping objects); a box must lie in [0, 1] with x0 ≤ x1 and y0 ≤ y1 and
    have a positive area (the original clamps boxes to the crop and drops empty ones). No modifier bits
    (group-of, occluded, ...) are set: the category token is the category id.

    Args:
        vocab_size: number of token ids; the coordinate grid has ⌊√vocab_size⌋ sections per side and the
            last id (``vocab_size − 1``) is the pad / "no object" token.
        max_objects: objects per layout; shorter layouts are padded with pad tokens.
        encode_crop: append the two tokens of the crop box (the whole image) as the original does.
        categories: category names, index = category id (saved with the tokenizer). ``None``: ids only (a
            converted OpenImages model, whose class names are not available offline).
        num_classes: number of category ids; defaults to ``len(categories)``, or, with no categories, every id
            below the pad token.

    Example:
        >>> tok = LayoutTokenizer(categories=["circle", "square"])
        >>> ids = tok([[{"label": "square", "box": [0.0, 0.0, 0.5, 1.0]}]])
        >>> ids.shape, ids[0, :3].tolist(), ids[0, 3:6].tolist(), ids[0, -2:].tolist()
        (torch.Size([1, 92]), [1, 0, 8054], [8191, 8191, 8191], [0, 8099])
        >>> [(o["label"], [round(v, 3) for v in o["box"]]) for o in tok.decode(ids)[0]]  # snapped to the grid
        [('square', [0.0, 0.0, 0.494, 1.0])]
    """

    config_name = "tokenizer_config.json"

    @register_to_config
    def __init__(
        self,
        vocab_size: int = 8192,
        max_objects: int = 30,
        encode_crop: bool = True,
        categories: list[str] | None = None,
        num_classes: int | None = None,
    ):
        if not isinstance(vocab_size, int) or vocab_size < 2:
            raise ValueError(f"vocab_size must be an int >= 2, got {vocab_size!r}")
        if not isinstance(max_objects, int) or max_objects < 1:
            raise ValueError(f"max_objects must be a positive int, got {max_objects!r}")
        if categories is not None:
            categories = list(categories)
            if not all(isinstance(name, str) for name in categories):
                raise ValueError("categories must be a list of str (index = category id)")
            duplicates = sorted({name for name in categories if categories.count(name) > 1})
            if duplicates:
                raise ValueError(f"categories has duplicate names: {duplicates}")
        if num_classes is not None:
            if not isinstance(num_classes, int) or num_classes < 1:
                raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
            if categories is not None and num_classes < len(categories):
                raise ValueError(f"num_classes={num_classes} is smaller than the {len(categories)} categories")
        self._categories = categories
        self._index = {name: i for i, name in enumerate(categories or [])}
        if self.num_classes > self.pad_token_id:
            raise ValueError(
                f"{self.num_classes} category ids do not fit below the pad token {self.pad_token_id} "
                f"(vocab_size={vocab_size})"
            )

    # ------------------------------------------------------------------ the token layout, read off the config
    @property
    def grid_size(self) -> int:
        """G: sections per side of the coordinate grid, ⌊√vocab_size⌋."""
        return math.isqrt(self.config.vocab_size)

    @property
    def pad_token_id(self) -> int:
        """The pad / "no object" token, ``vocab_size − 1``."""
        return self.config.vocab_size - 1

    @property
    def num_classes(self) -> int:
        """Number of valid category ids."""
        if self.config.num_classes is not None:
            return self.config.num_classes
        if self._categories is not None:
            return len(self._categories)
        return self.pad_token_id

    @property
    def categories(self) -> list[str] | None:
        return None if self._categories is None else list(self._categories)

    @property
    def sequence_length(self) -> int:
        """Tokens per layout: 3 per object, plus 2 crop tokens with ``encode_crop`` (92 for 30 objects)."""
        crop = 2 if self.config.encode_crop else 0
        return TOKENS_PER_OBJECT * self.config.max_objects + crop

    @property
    def model_max_length(self) -> int:
        """Same as :attr:`sequence_length` (the name transformers' tokenizers use)."""
        return self.sequence_length

    def coordinate_token(self, x: float, y: float) -> int:
        """The grid cell of the point (x, y) ∈ [0, 1]²: round(y·(G−1))·G + round(x·(G−1)) (Python rounding)."""
        last = self.grid_size - 1
        return round(y * last) * self.grid_size + round(x * last)

    def coordinates(self, token: int) -> tuple[float, float]:
        """Inverse of :meth:`coordinate_token`: the cell's (x, y) in [0, 1]."""
        last = self.grid_size - 1
        return (token % self.grid_size) / last, (token // self.grid_size) / last

    # ------------------------------------------------------------------ layouts → tokens
    def category_id(self, label, where: str = "") -> int:
        """A category name or id → its id, with a clear error for unknown names and ids out of range."""
        if isinstance(label, str):
            if self._categories is None:
                raise ValueError(
                    f"{where}label {label!r} is a name, but this tokenizer has no category names (ids only): "
                    f"use an integer id in [0, {self.num_classes})"
                )
            if label not in self._index:
                shown = ", ".join(repr(name) for name in self._categories[:_KNOWN_SHOWN])
                more = f", ... ({len(self._categories)} in all)" if len(self._categories) > _KNOWN_SHOWN else ""
                raise ValueError(f"{where}unknown category {label!r}; known categories: {shown}{more}")
            return self._index[label]
        if isinstance(label, bool) or not isinstance(label, numbers.Integral):
            raise ValueError(f"{where}label must be a category name or an integer id, got {label!r}")
        if not 0 <= int(label) < self.num_classes:
            raise ValueError(f"{where}category id {int(label)} is out of range [0, {self.num_classes})")
        return int(label)

    def encode(self, layout: list[dict], index: int | None = None) -> list[int]:
        """One layout → its ``sequence_length`` token ids (see the module docstring for the layout)."""
        image = "" if index is None else f"layout {index}, "
        if not isinstance(layout, (list, tuple)):
            raise ValueError(f"{image}a layout must be a list of objects {{'label': ..., 'box': [x0, y0, x1, y1]}}")
        if len(layout) > self.config.max_objects:
            raise ValueError(
                f"{image}{len(layout)} objects is more than this tokenizer holds (max_objects="
                f"{self.config.max_objects}); remove some objects"
            )
        tokens: list[int] = []
        for j, obj in enumerate(layout):
            where = f"{image}object {j}: "
            if not isinstance(obj, dict) or set(obj) != set(OBJECT_KEYS):
                got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
                raise ValueError(f"{where}expected a dict with keys {list(OBJECT_KEYS)}, got {got}")
            category = self.category_id(obj["label"], where)
            x0, y0, x1, y1 = check_box(obj["box"], where)
            tokens += [category, self.coordinate_token(x0, y0), self.coordinate_token(x1, y1)]
        pad = self.pad_token_id
        tokens += [pad] * (TOKENS_PER_OBJECT * (self.config.max_objects - len(layout)))
        if self.config.encode_crop:
            c0, c1 = FULL_CROP[:2], FULL_CROP[2:]
            tokens += [self.coordinate_token(*c0), self.coordinate_token(*c1)]
        return tokens

    def __call__(self, layouts, device: torch.device | str | None = None) -> torch.LongTensor:
        """Tokenize a list of layouts (one per image; a single layout is a batch of one) → (B, L) int64."""
        rows = [self.encode(layout, i) for i, layout in enumerate(as_layout_batch(layouts))]
        return torch.tensor(rows, dtype=torch.long, device=device)  # (B, L)

    def unconditional(self, batch: int, device: torch.device | str | None = None) -> torch.LongTensor:
        """The all-pad sequence (B, L): "no layout", the unconditional input for classifier-free guidance."""
        return torch.full((batch, self.sequence_length), self.pad_token_id, dtype=torch.long, device=device)

    # ------------------------------------------------------------------ tokens → layouts
    def decode(self, token_ids: torch.Tensor) -> list[list[dict]]:
        """(B, L) token ids → layouts (boxes snapped to the grid); pad objects are skipped."""
        rows = token_ids.tolist() if isinstance(token_ids, torch.Tensor) else list(token_ids)
        if rows and isinstance(rows[0], int):
            rows = [rows]
        layouts = []
        for row in rows:
            if len(row) != self.sequence_length:
                raise ValueError(f"a token row has {len(row)} ids, this tokenizer makes {self.sequence_length}")
            layout = []
            for j in range(self.config.max_objects):
                category, top_left, bottom_right = row[TOKENS_PER_OBJECT * j : TOKENS_PER_OBJECT * (j + 1)]
                if category == self.pad_token_id:
                    continue
                label = category
                if self._categories is not None and category < len(self._categories):
                    label = self._categories[category]
                layout.append({"label": label, "box": [*self.coordinates(top_left), *self.coordinates(bottom_right)]})
            layouts.append(layout)
        return layouts

    def __repr__(self) -> str:
        names = "ids only" if self._categories is None else f"{len(self._categories)} categories"
        return (
            f"{type(self).__name__}(vocab_size={self.config.vocab_size}, max_objects={self.config.max_objects}, "
            f"{names}, sequence_length={self.sequence_length})"
        )


register_with_diffusers(LayoutTokenizer)
