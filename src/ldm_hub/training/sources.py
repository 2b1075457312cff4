"""Where training rows come from: ``--dataset`` specs → a ``datasets`` Dataset / IterableDataset.

=====================================  ===================================================================
spec                                   dataset
=====================================  ===================================================================
``shapes``, ``shapes:ROWS[:SEED]``     the procedural shapes scenes (:mod:`ldm_hub.data.shapes`)
``photos:SPLIT:ROWS[:SEED]``           seeded crops of a split of the photo manifest (:mod:`ldm_hub.data.photos`;
                                       ``SPLIT`` train / validation / test), ``--resolution`` pixels square
``photos:FOLDER:ROWS[:SEED]``          the same from any folder of images
``A+B+...``                            the rows of each part, one after the other (their image columns only)
a ``save_to_disk`` folder              ``datasets.load_from_disk`` (``--split`` of a DatasetDict)
a folder of images                     ``imagefolder``
anything else                          a Hub dataset id
=====================================  ===================================================================

Example:
    >>> from ldm_hub.training.config import DataConfig
    >>> len(open_dataset(DataConfig(dataset="shapes:3+shapes:2:1")))
    5
"""

from __future__ import annotations

from pathlib import Path

from .config import DataConfig

SHAPES_DEFAULT_ROWS = 10_000
# datasets writes one of these into a save_to_disk folder.
_SAVED_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def _parse_shapes_spec(spec: str) -> tuple[int, int]:
    parts = spec.split(":")
    try:
        rows = int(parts[1]) if len(parts) > 1 and parts[1] else SHAPES_DEFAULT_ROWS
        seed = int(parts[2]) if len(parts) > 2 else 0
    except ValueError:
        raise ValueError(f"dataset {spec!r}: write 'shapes', 'shapes:ROWS' or 'shapes:ROWS:SEED'") from None
    if len(parts) > 3 or rows < 1:
        raise ValueError(f"dataset {spec!r}: write 'shapes', 'shapes:ROWS' or 'shapes:ROWS:SEED' with ROWS >= 1")
    return rows, seed


def _parse_photos_spec(spec: str) -> tuple[str, int, int]:
    usage = f"dataset {spec!r}: write 'photos:SPLIT:ROWS[:SEED]' (SPLIT train, validation, test or an image folder)"
    parts = spec.split(":")
    if len(parts) not in (3, 4) or not parts[1]:
        raise ValueError(usage)
    try:
        rows, seed = int(parts[2]), int(parts[3]) if len(parts) == 4 else 0
    except ValueError:
        raise ValueError(usage) from None
    if rows < 1:
        raise ValueError(usage + " with ROWS >= 1")
    return parts[1], rows, seed


def _builtin(spec: str, config: DataConfig):
    """A built-in spec's dataset, or None when ``spec`` is not one."""
    if spec == "shapes" or spec.startswith("shapes:"):
        from ..data.shapes import make_shapes_dataset

        rows, seed = _parse_shapes_spec(spec)
        return make_shapes_dataset(rows, seed, streaming=config.streaming)
    if spec.startswith("photos:"):
        from ..data.photos import MissingPhotosError, make_photo_crops_dataset

        source, rows, seed = _parse_photos_spec(spec)
        try:
            ds = make_photo_crops_dataset(source, rows, seed, size=config.resolution)
        except MissingPhotosError as e:
            raise ValueError(f"dataset {spec!r}: {e}") from None
        return ds.to_iterable_dataset() if config.streaming else ds
    return None


def _concatenated(specs: list[str], config: DataConfig):
    """The parts' image columns, one after the other."""
    import dataclasses

    import datasets

    parts = []
    for spec in specs:
        ds = open_dataset(dataclasses.replace(config, dataset=spec))
        parts.append(ds.select_columns([config.image_column]))
    return datasets.concatenate_datasets(parts)


def open_dataset(config: DataConfig):
    """The dataset named by ``config.dataset`` (map-style, or streaming when ``config.streaming``)."""
    import datasets

    spec = config.dataset
    if "+" in spec and not Path(spec).exists():
        return _concatenated([s for s in spec.split("+") if s], config)
    builtin = _builtin(spec, config)
    if builtin is not None:
        return builtin
    path = Path(spec)
    try:
        if path.is_dir() and any((path / marker).is_file() for marker in _SAVED_DATASET_MARKERS):
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if config.split not in ds:
                    raise ValueError(f"{path} has splits {list(ds)}, not {config.split!r} (--split)")
                ds = ds[config.split]
            return ds.to_iterable_dataset() if config.streaming else ds
        if path.is_dir():
            return datasets.load_dataset(
                "imagefolder", data_dir=str(path), split=config.split, streaming=config.streaming
            )
        if path.suffix or spec.startswith((".", "/")):
            raise ValueError(f"dataset folder not found: {spec}")
        return datasets.load_dataset(spec, config.dataset_config_name, split=config.split, streaming=config.streaming)
    except (FileNotFoundError, ConnectionError) as e:
        raise ValueError(f"cannot open dataset {spec!r}: {e}") from None
    except Exception as e:  # datasets raises DatasetNotFoundError, HfHubHTTPError, ...
        if isinstance(e, ValueError):
            raise
        raise ValueError(f"cannot open dataset {spec!r}: {type(e).__name__}: {e}") from None
