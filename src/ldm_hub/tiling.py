"""Overlapping tiles with blending weights: patch-wise sampling and decoding of large images in bounded memory."""

from __future__ import annotations

from collections.abc import Callable

import torch


def _tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """(start, size) of the tiles along one axis: every ``tile − overlap``, the last flush with the end."""
    if length <= tile:
        return [(0, length)]
    starts = list(range(0, length - tile, tile - overlap)) + [length - tile]
    return [(start, tile) for start in starts]


class TileGrid:
    """Overlapping tiles covering an h×w map, with blending weights that sum to one at every output pixel.

    Tiles are T×T (or the whole axis where it is shorter), start every T − O pixels, and the last one is flush
    with the edge. A function applied to the tiles may scale them by ``scale`` (the decoder's f). Every tile's
    weight ramps linearly, (i + 1)/(O·scale + 1), over the O·scale output pixels of each edge it shares with a
    neighbour and is 1 elsewhere; dividing by the sum over tiles makes the blend a convex combination, so one
    tile covering the whole map has weight exactly 1 and reproduces the untiled result. (The CompVis
    ``split_input_params`` idea — fold/unfold with a border weighting — with tiles flush with every edge.)

    Example:
        >>> grid = TileGrid((12, 8), tile=8, overlap=4)
        >>> len(grid.boxes), grid.map(lambda x: x * 2, torch.ones(1, 1, 12, 8), batch_size=2).unique().tolist()
        (2, [2.0])
    """

    def __init__(self, size, tile: int, overlap: int, scale: int = 1, device=None, dtype=torch.float32):
        height, width = size
        self.size, self.scale = (height, width), scale
        self.boxes = [(r, c) for r in _tile_spans(height, tile, overlap) for c in _tile_spans(width, tile, overlap)]
        ramp = overlap * scale

        def window(start: int, span: int, length: int) -> torch.Tensor:
            i = torch.arange(span * scale, dtype=torch.float64)  # built on the host in float64, moved once below
            w = torch.ones_like(i)
            if start > 0:  # a neighbour before: ramp up
                w = torch.minimum(w, (i + 1) / (ramp + 1))
            if start + span < length:  # a neighbour after: ramp down
                w = torch.minimum(w, (span * scale - i) / (ramp + 1))
            return w

        weights = [
            window(r0, rs, height)[:, None] * window(c0, cs, width)[None, :] for (r0, rs), (c0, cs) in self.boxes
        ]
        total = torch.zeros(height * scale, width * scale, dtype=torch.float64)
        for ((r0, rs), (c0, cs)), w in zip(self.boxes, weights):
            total[r0 * scale : (r0 + rs) * scale, c0 * scale : (c0 + cs) * scale] += w
        self.weights = [
            (w / total[r0 * scale : (r0 + rs) * scale, c0 * scale : (c0 + cs) * scale]).to(device=device, dtype=dtype)
            for ((r0, rs), (c0, cs)), w in zip(self.boxes, weights)
        ]  # each (T_h·scale, T_w·scale)

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Blend ``fn`` applied tile by tile to ``x`` (B, C, h, w), ``batch_size`` tiles per call (stacked on the
        batch axis) → (B, C', h·scale, w·scale)."""
        batch, s = x.shape[0], self.scale
        out = None
        for first in range(0, len(self.boxes), batch_size):
            boxes = self.boxes[first : first + batch_size]
            tiles = torch.cat([x[:, :, r0 : r0 + rs, c0 : c0 + cs] for (r0, rs), (c0, cs) in boxes])  # (k·B, C, T, T)
            y = fn(tiles)  # (k·B, C', T·s, T·s)
            if out is None:
                out = y.new_zeros(batch, y.shape[1], self.size[0] * s, self.size[1] * s)
            for ((r0, rs), (c0, cs)), w, part in zip(boxes, self.weights[first:], y.split(batch)):
                out[:, :, r0 * s : (r0 + rs) * s, c0 * s : (c0 + cs) * s] += w.to(part.dtype) * part
        return out


# Tiled sampling and decoding defaults: overlap as a fraction of the tile, tiles per UNet / decoder call.
DEFAULT_TILE_OVERLAP_FRACTION = 0.25
DEFAULT_TILE_BATCH_SIZE = 4


def plan_tiles(tile_size, tile_overlap, tile_batch_size, *, f: int, multiple: int) -> tuple[int, int, int]:
    """Check tile arguments given in image pixels → ``(tile, overlap, tiles per call)`` in latent pixels.

    ``tile_size`` must be a positive multiple of ``multiple`` (f × the UNet's downsampling when sampling, f when
    only decoding), ``tile_overlap`` a multiple of f in [0, tile_size) (default a quarter of the tile).

    Example:
        >>> plan_tiles(64, None, 4, f=4, multiple=16)
        (16, 4, 4)
    """
    if not isinstance(tile_size, int) or isinstance(tile_size, bool) or tile_size <= 0 or tile_size % multiple:
        raise ValueError(f"`tile_size`={tile_size!r} must be a positive multiple of {multiple} pixels")
    if tile_overlap is None:
        tile_overlap = int(tile_size * DEFAULT_TILE_OVERLAP_FRACTION) // f * f
    if not isinstance(tile_overlap, int) or tile_overlap < 0 or tile_overlap % f or tile_overlap >= tile_size:
        raise ValueError(
            f"`tile_overlap`={tile_overlap!r} must be a multiple of {f} pixels in [0, tile_size={tile_size})"
        )
    if not isinstance(tile_batch_size, int) or tile_batch_size < 1:
        raise ValueError(f"`tile_batch_size` must be a positive int, got {tile_batch_size!r}")
    return tile_size // f, tile_overlap // f, tile_batch_size
