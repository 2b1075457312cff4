"""Datasets made in the library (no download): :mod:`ldm_hub.data.shapes`, the procedural shapes scenes.

Imports: numpy, PIL, datasets only (conditioning reads its category names).
"""

from .shapes import (
    COLORS,
    LABELS,
    SHAPES,
    caption_for,
    make_shapes_dataset,
    parse_caption,
    parse_label,
    render_layout,
    sample_layout,
)

__all__ = [
    "COLORS",
    "LABELS",
    "SHAPES",
    "caption_for",
    "make_shapes_dataset",
    "parse_caption",
    "parse_label",
    "render_layout",
    "sample_layout",
]
