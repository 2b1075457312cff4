"""Training data from Hugging Face ``datasets``: open, check, decode, transform, and iterate resumably.

``open_dataset`` (:mod:`.sources`) accepts the procedural ``shapes`` and ``photos`` datasets, a Hub id, a
``save_to_disk`` folder or a folder of images (imagefolder), as a map-style ``Dataset`` or a streaming
``IterableDataset``. Rows are decoded here, not by ``datasets``, so that a bad row is reported by its number and
column:

=====================  =========================================================================
bad row                what happens (``skip_bad_rows=False`` / ``True``)
=====================  =========================================================================
column not in dataset  ValueError naming the column and listing the dataset's columns (always)
missing value (None)   BadRowError "row 12, column 'caption': missing value" / row skipped
corrupt image          BadRowError "row 12, column 'image': cannot decode the image (...)" / skipped
wrong image mode       BadRowError "... mode 'L', expected RGB (pass --convert-images ...)" / skipped
box outside [0, 1]     BadRowError "... object 1 box [0.2, 0.1, 1.3, 0.5] is outside [0, 1]" / skipped
=====================  =========================================================================

Skipping checks a map-style dataset once before training (so the batches stay full and the order stays
exactly resumable) and a streaming one as it goes; the number skipped is reported either way.

:class:`BatchStream` gives each process its part of every global batch in a seeded order and records how far
it got (``state_dict``), so a resumed run sees exactly the batches the interrupted one would have seen.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch

from ..conditioning.inputs import check_box
from ..conditioning.layout_planner import layout_to_segmentation
from .sources import SHAPES_DEFAULT_ROWS, open_dataset  # noqa: F401  (re-exported)


class BadRowError(ValueError):
    """A dataset row that cannot be used; the message names the row and the column."""


def column_names(ds) -> list[str]:
    names = ds.column_names
    if names is None and getattr(ds, "features", None) is not None:
        names = list(ds.features)
    return list(names or [])


def check_columns(ds, needed: dict[str, str]) -> None:
    """ValueError if a needed column is absent: ``needed`` maps the role ('image', ...) to the column name."""
    names = column_names(ds)
    if not names:
        return  # a streaming dataset without declared features: rows are checked one by one
    for role, column in needed.items():
        if column not in names:
            flag = f"--{role.replace('_', '-')}-column"
            raise ValueError(
                f"the dataset has no column {column!r} for the {role.replace('_', ' ')} (set "
                f"{flag}); its columns are {names}"
            )


def without_image_decoding(ds, columns: Sequence[str]):
    """Cast image columns to ``Image(decode=False)`` so rows are decoded (and checked) here."""
    import datasets

    features = getattr(ds, "features", None) or {}
    for column in columns:
        if isinstance(features.get(column), datasets.Image) and features[column].decode:
            ds = ds.cast_column(column, datasets.Image(decode=False))
    return ds


# ---------------------------------------------------------------------------------------------- rows
def _open_image(value, row: int, column: str) -> PIL.Image.Image:
    """Decode an image value (PIL, {"bytes"/"path"}, a path, an array) in whatever mode it has."""
    if value is None:
        raise BadRowError(f"row {row}, column {column!r}: missing value (no image)")
    try:
        if isinstance(value, PIL.Image.Image):
            image = value
        elif isinstance(value, dict) and value.get("bytes") is not None:
            image = PIL.Image.open(io.BytesIO(value["bytes"]))
        elif isinstance(value, dict) and value.get("path"):
            image = PIL.Image.open(value["path"])
        elif isinstance(value, str):
            image = PIL.Image.open(value)
        elif isinstance(value, np.ndarray):
            image = PIL.Image.fromarray(value)
        else:
            raise BadRowError(f"row {row}, column {column!r}: expected an image, found {type(value).__name__}")
        image.load()
    except BadRowError:
        raise
    except (OSError, ValueError, SyntaxError, PIL.UnidentifiedImageError) as e:
        raise BadRowError(f"row {row}, column {column!r}: cannot decode the image ({type(e).__name__}: {e})") from None
    return image


def _decode_image(value, row: int, column: str, convert: bool) -> PIL.Image.Image:
    image = _open_image(value, row, column)
    if image.mode != "RGB":
        if not convert:
            raise BadRowError(
                f"row {row}, column {column!r}: image mode {image.mode!r}, expected RGB (pass --convert-images to "
                "convert every image to RGB, or --skip-bad-rows to skip such rows)"
            )
        image = image.convert("RGB")
    return image


def check_layout(value, row: int, column: str) -> list[dict]:
    """A layout value as ``[{"label", "box"}]`` with every box inside [0, 1] and ordered corners."""
    if value is None:
        raise BadRowError(f"row {row}, column {column!r}: missing value (no layout)")
    if isinstance(value, dict) and set(value) >= {"label", "box"} and isinstance(value["label"], list):
        value = [{"label": lab, "box": box} for lab, box in zip(value["label"], value["box"])]  # columnar form
    if not isinstance(value, (list, tuple)):
        raise BadRowError(
            f"row {row}, column {column!r}: expected a list of {{'label', 'box'}}, found {type(value).__name__}"
        )
    objects = []
    for k, obj in enumerate(value):
        if not isinstance(obj, dict) or "label" not in obj or "box" not in obj:
            raise BadRowError(f"row {row}, column {column!r}: object {k} must be a dict with 'label' and 'box'")
        try:  # the one box rule, shared with the tokenizer, the planner, the pipeline and the demo
            box = check_box(obj["box"], f"row {row}, column {column!r}: object {k} ")
        except ValueError as e:
            raise BadRowError(str(e)) from None
        objects.append({"label": obj["label"], "box": [float(v) for v in box]})
    return objects


INDEX_MAP_MODES = ("L", "P", "I", "I;16")


@dataclass
class RowReader:
    """Decode and check one row: the image plus whatever the conditioning needs (caption / layout / low-res /
    segmentation); a bad value raises :class:`BadRowError` naming the row and the column.

    Example:
        >>> from ldm_hub.data.shapes import make_shapes_dataset
        >>> row = RowReader("image", caption_column="caption")(make_shapes_dataset(1)[0], index=0)
        >>> sorted(row), row["image"].mode
        (['caption', 'image'], 'RGB')
    """

    image_column: str
    caption_column: str | None = None
    layout_column: str | None = None
    low_res_column: str | None = None
    convert_images: bool = False
    segmentation_column: str | None = None
    # Draw the segmentation from the layout with these categories (when there is no segmentation column).
    segmentation_categories: Sequence[str] | None = None

    def __call__(self, row: dict, index: int) -> dict:
        out = {"image": _decode_image(row.get(self.image_column), index, self.image_column, self.convert_images)}
        if self.caption_column is not None:
            caption = row.get(self.caption_column)
            if caption is None:
                raise BadRowError(f"row {index}, column {self.caption_column!r}: missing value (no caption)")
            if not isinstance(caption, str):
                raise BadRowError(
                    f"row {index}, column {self.caption_column!r}: expected a string, found {type(caption).__name__}"
                )
            out["caption"] = caption
        if self.layout_column is not None:
            out["layout"] = check_layout(row.get(self.layout_column), index, self.layout_column)
        if self.low_res_column is not None and row.get(self.low_res_column) is not None:
            out["low_res"] = _decode_image(row[self.low_res_column], index, self.low_res_column, self.convert_images)
        if self.segmentation_column is not None:
            column = self.segmentation_column
            value = row.get(column)
            if value is None:
                raise BadRowError(f"row {index}, column {column!r}: missing value (no segmentation map)")
            segmentation = _open_image(value, index, column)
            if segmentation.mode not in INDEX_MAP_MODES:
                raise BadRowError(
                    f"row {index}, column {column!r}: segmentation map of mode {segmentation.mode!r}; "
                    "expected an index map (one class id per pixel, mode L or P)"
                )
            out["segmentation"] = segmentation
        elif self.segmentation_categories is not None:
            try:
                out["segmentation"] = layout_to_segmentation(
                    out["layout"], out["image"].size, self.segmentation_categories
                )
            except ValueError as e:
                raise BadRowError(f"row {index}, column {self.layout_column!r}: {e}") from None
        return out

    @property
    def columns(self) -> list[str]:
        names = (
            self.image_column,
            self.caption_column,
            self.layout_column,
            self.low_res_column,
            self.segmentation_column,
        )
        return [c for c in names if c]


# ---------------------------------------------------------------------------------------------- transforms
def _to_tensor(image: PIL.Image.Image) -> torch.Tensor:
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0  # (H, W, 3) in [-1, 1]
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (3, H, W)


@dataclass
class ImageTransform:
    """Resize the shorter side to ``resolution`` (bicubic), crop to a square, maybe flip; tensors in [-1, 1].

    Random crops and flips come from a generator seeded by (seed, epoch, row), never the global RNG, so they
    are the same after a resume and whatever the number of DataLoader workers. ``low_res_size`` adds the
    super-resolution input: the row's low-res image when the image needed no resize or crop, otherwise a
    bicubic downsample of the cropped image. With a ``degradation`` (:mod:`ldm_hub.data.degradations`, e.g. the
    randomised BSR one) the low-res image is always that degradation of the cropped, flipped image, drawn from
    its own generator seeded by (seed, epoch, row, 1), so the crops and flips stay those of ``degradation=None``.
    A segmentation map follows the image (nearest-neighbour).

    Example:
        >>> import PIL.Image
        >>> out = ImageTransform(32, low_res_size=8)({"image": PIL.Image.new("RGB", (48, 40))}, epoch=0, index=0)
        >>> out["pixel_values"].shape, out["low_res"].shape
        (torch.Size([3, 32, 32]), torch.Size([3, 8, 8]))
    """

    resolution: int
    crop: str = "center"
    random_flip: bool = False
    seed: int = 0
    low_res_size: int | None = None
    degradation: Callable | None = None  # (image, low_res_size, rng) -> low-res image; None: bicubic as above

    def __call__(self, example: dict, epoch: int, index: int) -> dict:
        image = example["image"]
        rng = np.random.default_rng([self.seed, epoch, index])
        segmentation = example.get("segmentation")
        untouched = image.size == (self.resolution, self.resolution)
        if segmentation is not None and segmentation.size != image.size:
            raise BadRowError(
                f"row {index}: segmentation map size {segmentation.size} differs from the image size {image.size}"
            )
        if not untouched:
            w, h = image.size
            scale = self.resolution / min(w, h)
            size = (max(self.resolution, round(w * scale)), max(self.resolution, round(h * scale)))
            image = image.resize(size, PIL.Image.Resampling.BICUBIC)
            if segmentation is not None:
                segmentation = segmentation.resize(size, PIL.Image.Resampling.NEAREST)
            w, h = image.size
            if self.crop == "random":
                left, top = (
                    int(rng.integers(0, w - self.resolution + 1)),
                    int(rng.integers(0, h - self.resolution + 1)),
                )
            else:
                left, top = (w - self.resolution) // 2, (h - self.resolution) // 2
            image = image.crop((left, top, left + self.resolution, top + self.resolution))
            if segmentation is not None:
                segmentation = segmentation.crop((left, top, left + self.resolution, top + self.resolution))
        flip = self.random_flip and bool(rng.integers(0, 2))
        if flip:
            image = image.transpose(PIL.Image.Transpose.FLIP_LEFT_RIGHT)
            if segmentation is not None:
                segmentation = segmentation.transpose(PIL.Image.Transpose.FLIP_LEFT_RIGHT)
        out = {k: v for k, v in example.items() if k not in ("image", "low_res", "segmentation")}
        if segmentation is not None:
            out["segmentation"] = torch.from_numpy(np.asarray(segmentation).astype(np.int64))  # (H, W) class ids
        out["pixel_values"] = _to_tensor(image)  # (3, H, W)
        if self.low_res_size is not None and self.degradation is not None:
            rng = np.random.default_rng([self.seed, epoch, index, 1])
            out["low_res"] = _to_tensor(self.degradation(image, self.low_res_size, rng))  # (3, h, w)
        elif self.low_res_size is not None:
            low = example.get("low_res") if untouched else None
            if low is None or low.size != (self.low_res_size, self.low_res_size):
                low = image.resize((self.low_res_size, self.low_res_size), PIL.Image.Resampling.BICUBIC)
            elif flip:
                low = low.transpose(PIL.Image.Transpose.FLIP_LEFT_RIGHT)
            out["low_res"] = _to_tensor(low)  # (3, h, w)
        if flip and "layout" in out:
            out["layout"] = [
                {"label": o["label"], "box": [1 - o["box"][2], o["box"][1], 1 - o["box"][0], o["box"][3]]}
                for o in out["layout"]
            ]
        out["index"] = index
        return out


def collate(examples: list[dict]) -> dict:
    """Stack tensors, keep captions and layouts as lists."""
    batch: dict = {"index": torch.tensor([e["index"] for e in examples])}
    for key in ("pixel_values", "low_res", "segmentation"):
        if key in examples[0]:
            batch[key] = torch.stack([e[key] for e in examples])
    for key in ("caption", "layout"):
        if key in examples[0]:
            batch[key] = [e[key] for e in examples]
    return batch


# ---------------------------------------------------------------------------------------------- iteration
class _Rows(torch.utils.data.Dataset):
    """Map-style view: key (epoch, row) → transformed example."""

    def __init__(self, ds, reader: RowReader, transform: ImageTransform):
        self.ds, self.reader, self.transform = ds, reader, transform

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        return self.transform(self.reader(self.ds[index], index), epoch, index)


def find_usable_rows(ds, reader: RowReader, chunk: int = 256) -> tuple[list[int], list[str]]:
    """Check every row of a map-style dataset; the indices that pass and the problems of those that do not."""
    usable, problems = [], []
    subset = ds.select_columns([c for c in reader.columns if c in column_names(ds)])
    for start in range(0, len(subset), chunk):
        block = subset[start : start + chunk]
        for offset in range(len(next(iter(block.values())))):
            index = start + offset
            try:
                reader({k: v[offset] for k, v in block.items()}, index)
            except BadRowError as e:
                problems.append(str(e))
            else:
                usable.append(index)
    return usable, problems


class BatchStream:
    """This process's batches, in a seeded order, resumable from :meth:`state_dict`.

    Map-style data: epoch e visits ``rows`` in ``default_rng([seed, e]).permutation``; global batch k of an
    epoch is positions [k·B·P, (k+1)·B·P) of it (B per process, P processes), process p takes the p-th slice
    of B; a last, partial global batch is dropped. The state is (epoch, position).

    Streaming data: ``ds.shuffle(seed, buffer).set_epoch(e)``, split across processes, and the state is the
    number of stream rows this process consumed this epoch (bad rows included), skipped on resume.

    Example:
        >>> from ldm_hub.data.shapes import make_shapes_dataset
        >>> stream = BatchStream(make_shapes_dataset(8), RowReader("image"), ImageTransform(64), batch_size=4)
        >>> batch = next(iter(stream))
        >>> batch["pixel_values"].shape, stream.state_dict()
        (torch.Size([4, 3, 64, 64]), {'epoch': 0, 'position': 4, 'skipped': 0})
    """

    def __init__(
        self,
        ds,
        reader: RowReader,
        transform: ImageTransform,
        batch_size: int,
        *,
        seed: int = 0,
        process_index: int = 0,
        num_processes: int = 1,
        streaming: bool = False,
        shuffle_buffer: int = 1000,
        skip_bad_rows: bool = False,
        num_workers: int = 0,
        rows: Sequence[int] | None = None,
    ):
        self.ds = without_image_decoding(ds, [reader.image_column, reader.low_res_column or ""])
        self.reader, self.transform = reader, transform
        self.batch_size, self.seed = batch_size, seed
        self.rank, self.world = process_index, num_processes
        self.streaming, self.shuffle_buffer = streaming, shuffle_buffer
        self.skip_bad_rows, self.num_workers = skip_bad_rows, num_workers
        self.epoch, self.position = 0, 0
        self.skipped: list[str] = []
        if not streaming:
            if rows is None and skip_bad_rows:
                rows, self.skipped = find_usable_rows(self.ds, reader)
            self.rows = np.arange(len(self.ds)) if rows is None else np.asarray(rows)
            if len(self.rows) < batch_size * num_processes:
                raise ValueError(
                    f"the dataset has {len(self.rows)} usable rows, fewer than one global batch "
                    f"({batch_size} per process × {num_processes} processes)"
                )

    # -- state
    def state_dict(self) -> dict:
        return {"epoch": int(self.epoch), "position": int(self.position), "skipped": len(self.skipped)}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    @property
    def num_rows(self) -> int | None:
        return None if self.streaming else len(self.rows)

    # -- iteration
    def _order(self, epoch: int) -> np.ndarray:
        return self.rows[np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))]

    def _batch_keys(self) -> Iterator[list[tuple[int, int, int, int]]]:
        global_batch = self.batch_size * self.world
        epoch, position = self.epoch, self.position
        while True:
            if position + global_batch > len(self.rows):
                epoch, position = epoch + 1, 0
            order = self._order(epoch)
            while position + global_batch <= len(self.rows):
                start = position + self.rank * self.batch_size
                end_position = position + global_batch
                yield [(epoch, int(i), epoch, end_position) for i in order[start : start + self.batch_size]]
                position = end_position
            epoch, position = epoch + 1, 0

    def __iter__(self) -> Iterator[dict]:
        return self._iter_streaming() if self.streaming else self._iter_map()

    def _iter_map(self) -> Iterator[dict]:
        keys = (([k[:2] for k in batch], batch[0][2:]) for batch in self._batch_keys())
        loader = torch.utils.data.DataLoader(
            _KeyList(),
            sampler=_BatchKeySampler(keys),
            batch_size=None,
            collate_fn=_FetchBatch(_Rows(self.ds, self.reader, self.transform)),
            num_workers=self.num_workers,
            persistent_workers=False,
            # its own generator: creating the iterator must not draw from the global RNG (exact resume)
            generator=torch.Generator().manual_seed(self.seed),
        )
        for batch in loader:
            self.epoch, self.position = batch.pop("_state")
            yield batch

    def _stream(self, epoch: int):
        from datasets.distributed import split_dataset_by_node

        ds = self.ds.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer)
        ds.set_epoch(epoch)
        if self.world > 1:
            ds = split_dataset_by_node(ds, rank=self.rank, world_size=self.world)
        return ds

    def _iter_streaming(self) -> Iterator[dict]:
        names = column_names(self.ds)
        while True:
            ds = self._stream(self.epoch)
            consumed = self.position
            if consumed:
                ds = ds.skip(consumed)
            pending: list[dict] = []
            yielded_any = False
            for row in ds:
                index = consumed
                consumed += 1
                if names:
                    missing = [c for c in self.reader.columns if c not in row and c != self.reader.low_res_column]
                    if missing:
                        raise ValueError(f"the dataset has no column {missing[0]!r}; its columns are {names}")
                try:
                    example = self.transform(self.reader(row, index), self.epoch, index)
                except BadRowError as e:
                    if not self.skip_bad_rows:
                        where = f"row numbers count this process's stream, epoch {self.epoch}"
                        raise BadRowError(f"{e} ({where})") from None
                    self.skipped.append(str(e))
                    continue
                pending.append(example)
                if len(pending) == self.batch_size:
                    self.position = consumed
                    yielded_any = True
                    yield collate(pending)
                    pending = []
            if not yielded_any and self.position == 0:
                raise ValueError("the streaming dataset gave no complete batch for this process")
            self.epoch, self.position = self.epoch + 1, 0


class _BatchKeySampler(torch.utils.data.Sampler):
    """Yields (row keys of one batch, stream state after it), from an endless generator."""

    def __init__(self, batches: Iterator):
        self.batches = batches

    def __iter__(self):
        return self.batches


class _FetchBatch:
    """``collate_fn`` of the loader (runs in the workers): load and collate one batch of keys."""

    def __init__(self, rows: _Rows):
        self.rows = rows

    def __call__(self, item) -> dict:
        keys, state = item
        batch = collate([self.rows[k] for k in keys])
        batch["_state"] = state
        return batch


class _KeyList(torch.utils.data.Dataset):
    """Placeholder dataset: the sampler yields whole batches of keys and ``collate_fn`` loads them."""

    def __len__(self) -> int:  # pragma: no cover - never asked with a custom sampler and batch_size=None
        return 0

    def __getitem__(self, item):
        return item


def _column_head(ds, column: str, limit: int) -> list:
    """The first ``limit`` values of ``column`` (map-style: read as one column; streaming: the rows' values)."""
    import datasets

    if isinstance(ds, datasets.Dataset):
        return ds.select_columns([column])[:limit][column]
    return [row.get(column) for _, row in zip(range(limit), ds)]


def caption_vocabulary(ds, column: str, limit: int = 100_000) -> list[str]:
    """The lower-cased words and punctuation of a caption column (for a tiny word-level tokenizer)."""
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    normalizer, splitter = BertNormalizer(lowercase=True), BertPreTokenizer()
    words: set[str] = set()
    for caption in _column_head(ds, column, limit):
        if isinstance(caption, str):
            words.update(w for w, _ in splitter.pre_tokenize_str(normalizer.normalize_str(caption)))
    if not words:
        warnings.warn(f"no words found in column {column!r}", stacklevel=2)
    return sorted(words)


def fit_layout_planner(ds, column: str, labels: Sequence[str], limit: int = 10_000):
    """A :class:`~ldm_hub.LayoutPlanner` fit on the first ``limit`` layouts of ``column`` (rows whose layout
    does not pass :func:`check_layout` are left out of the fit; the training stream reports them)."""
    from ..conditioning.layout_planner import LayoutPlanner

    layouts = []
    for i, value in enumerate(_column_head(ds, column, limit)):
        try:
            layouts.append(check_layout(value, i, column))
        except BadRowError:
            continue
    return LayoutPlanner.fit(layouts, labels)
