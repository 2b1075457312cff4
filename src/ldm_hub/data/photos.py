"""Photographs that can be had offline from package registries, and a seeded photo-crop dataset built from them.

:data:`PHOTOS` is the manifest: every photograph bundled inside a PyPI package (scikit-image's ``skimage.data``,
scikit-learn's sample images, matplotlib's sample data) or a Debian wallpaper package that the project uses,
with its licence and its split. Nothing is fetched at run time and no photo is stored in this repository: the
manifest points at the installed files, and :func:`photo_paths` says which package to install when one is
missing. OpenCV's sample images (Debian's opencv-doc) are deliberately absent: they are the project's
independent check of the shipped models, outside training and model selection.

The split is by photo (train: fitting; validation: checkpoint selection; test: the reported numbers), and a
wallpaper shipped at several resolutions enters once (one resolution). Grayscale photos are used as RGB.

:func:`make_photo_crops_dataset` turns photos (a split of the manifest or any image folder) into a
``datasets.Dataset`` of square crops: row ``i`` takes photo ``i mod P``, a crop side drawn log-uniformly
between ``size`` and the photo's shorter side (several scales: from native pixels to the whole photo), a
uniform position and a left-right flip, all from ``numpy.random.default_rng([seed, i])``, resized to ``size``
with Lanczos. A row never depends on the other rows, as in :mod:`ldm_hub.data.shapes`.

Example:
    >>> counts = {s: len(photos_in_split(s)) for s in SPLITS}
    >>> counts["validation"] >= 4 and counts["test"] >= 8 and sum(counts.values()) >= 40
    True
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image

SPLITS = ("train", "validation", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Photo:
    """One photograph: where it is installed from, its licence and its split."""

    name: str
    package: str  # the PyPI distribution or the Debian package that installs the file
    path: str  # PyPI: relative to the importable top-level module's parent; Debian: the installed absolute path
    licence: str
    split: str

    @property
    def registry(self) -> str:
        return "debian" if self.path.startswith("/") else "pypi"

    @property
    def install_hint(self) -> str:
        if self.registry == "debian":
            return f"apt-get install {self.package}"
        return f"pip install {self.package}  (or: pip install 'ldm_hub[photos]')"


def _pypi(name, package, path, licence, split):
    return Photo(name, package, path, licence, split)


_PLASMA = "/usr/share/wallpapers/{}/contents/images/{}"
_LOMIRI = "/usr/share/backgrounds/{}"
_MATE = "/usr/share/backgrounds/mate/nature/{}"
_PLASMA_LICENCE = "LGPL-3 (KDE Plasma wallpaper, metadata.json); package GPL-2+"
_MATE_LICENCE = "GPL-2+ (mate-backgrounds copyright)"

PHOTOS: tuple[Photo, ...] = (
    # ---- PyPI: scikit-image (skimage/data), scikit-learn (sklearn/datasets/images), matplotlib (sample_data)
    _pypi("astronaut", "scikit-image", "skimage/data/astronaut.png", "public domain (NASA)", "test"),
    _pypi("chelsea", "scikit-image", "skimage/data/chelsea.png", "CC0 (Stefan van der Walt)", "test"),
    _pypi("coffee", "scikit-image", "skimage/data/coffee.png", "CC0 (Rachel Michetti)", "test"),
    _pypi("rocket", "scikit-image", "skimage/data/rocket.jpg", "public domain (SpaceX)", "validation"),
    _pypi("hubble-deep-field", "scikit-image", "skimage/data/hubble_deep_field.jpg", "public domain (NASA)", "train"),
    _pypi("retina", "scikit-image", "skimage/data/retina.jpg", "CC0 (Mikael Häggström)", "train"),
    _pypi("immunohistochemistry", "scikit-image", "skimage/data/ihc.png", "no known copyright restrictions", "train"),
    _pypi("camera", "scikit-image", "skimage/data/camera.png", "CC0 (Lav Varshney), grayscale", "train"),
    _pypi("coins", "scikit-image", "skimage/data/coins.png", "no known copyright (Brooklyn Museum), grayscale",
          "train"),
    _pypi("china", "scikit-learn", "sklearn/datasets/images/china.jpg", "CC BY 2.0 (danielbuechele)", "test"),
    _pypi("flower", "scikit-learn", "sklearn/datasets/images/flower.jpg", "CC BY 2.0 (vultilion)", "validation"),
    _pypi("grace-hopper", "matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
          "public domain (U.S. Navy)", "test"),
    # ---- Debian: plasma-workspace-wallpapers (one resolution of each)
    Photo("by-the-water", "plasma-workspace-wallpapers", _PLASMA.format("BytheWater", "1920x1080.jpg"),
          _PLASMA_LICENCE + "; Maciej Wiklo", "train"),
    Photo("cold-ripple", "plasma-workspace-wallpapers", _PLASMA.format("ColdRipple", "1920x1080.jpg"),
          _PLASMA_LICENCE + "; Risto Saukonpää", "train"),
    Photo("colorful-cups", "plasma-workspace-wallpapers", _PLASMA.format("ColorfulCups", "2560x1600.jpg"),
          _PLASMA_LICENCE + "; Dmitri Popov", "train"),
    Photo("darkest-hour", "plasma-workspace-wallpapers", _PLASMA.format("DarkestHour", "1920x1080.jpg"),
          _PLASMA_LICENCE + "; Risto Saukonpää", "train"),
    Photo("evening-glow", "plasma-workspace-wallpapers", _PLASMA.format("EveningGlow", "1920x1080.jpg"),
          _PLASMA_LICENCE + "; Ian Hex", "test"),
    Photo("fallen-leaf", "plasma-workspace-wallpapers", _PLASMA.format("FallenLeaf", "1920x1080.jpg"),
          _PLASMA_LICENCE + "; Martin Klapetek", "train"),
    Photo("grey", "plasma-workspace-wallpapers", _PLASMA.format("Grey", "1920x1080.jpg"),
          _PLASMA_LICENCE + "; Sigi Sagi", "train"),
    Photo("kite", "plasma-workspace-wallpapers", _PLASMA.format("Kite", "1920x1080.jpg"),
          _PLASMA_LICENCE + "; Risto Saukonpää", "train"),
    Photo("one-stands-out", "plasma-workspace-wallpapers", _PLASMA.format("OneStandsOut", "1920x1080.jpg"),
          _PLASMA_LICENCE + "; Risto Saukonpää", "train"),
    Photo("path", "plasma-workspace-wallpapers", _PLASMA.format("Path", "1920x1080.jpg"),
          _PLASMA_LICENCE + "; Risto Saukonpää", "test"),
    Photo("summer-1am", "plasma-workspace-wallpapers", _PLASMA.format("summer_1am", "1920x1080.jpg"),
          _PLASMA_LICENCE + "; Risto Saukonpää", "validation"),
    # ---- Debian: lomiri-wallpapers-16.04 / -20.04 (Ubuntu Touch community wallpapers)
    Photo("bridge", "lomiri-wallpapers-16.04", _LOMIRI.format("Bridge_by_Sander_Klootwijk.jpg"),
          "CC-BY-SA-4.0 (Sander Klootwijk)", "train"),
    Photo("dragonfly", "lomiri-wallpapers-16.04", _LOMIRI.format("Dragonfly_by_Bolly.jpg"),
          "CC-BY-SA-4.0 (Bolly)", "validation"),
    Photo("fig", "lomiri-wallpapers-16.04", _LOMIRI.format("Picture_0B_by_freespace.jpg"),
          "CC-BY-4.0 (Trevor 'Freespace')", "train"),
    Photo("brushes", "lomiri-wallpapers-16.04", _LOMIRI.format("Picture_1A_by_freespace.jpg"),
          "CC-BY-4.0 (Trevor 'Freespace')", "train"),
    Photo("wine", "lomiri-wallpapers-16.04", _LOMIRI.format("Wine_by_Jakkub_Mede.jpg"),
          "CC-BY-4.0 (Jakkub Mede)", "train"),
    Photo("aitzgorri", "lomiri-wallpapers-16.04", _LOMIRI.format("aitzgorri_by_Aitzol_Berasategi.jpg"),
          "CC-BY-4.0 (Aitzol Berasategi)", "train"),
    Photo("free", "lomiri-wallpapers-16.04", _LOMIRI.format("free_by_Peter_Nerlich.jpg"),
          "CC-BY-SA-4.0 (Peter Nerlich)", "train"),
    Photo("friends", "lomiri-wallpapers-16.04", _LOMIRI.format("friends_by_Aitzol_Berasategi.jpg"),
          "CC-BY-4.0 (Aitzol Berasategi)", "test"),
    Photo("life", "lomiri-wallpapers-16.04", _LOMIRI.format("life_by_Aitzol_Berasategi.jpg"),
          "CC-BY-4.0 (Aitzol Berasategi)", "train"),
    Photo("picos-de-europa", "lomiri-wallpapers-16.04", _LOMIRI.format("picosdeeuropa_by_Aitzol_Berasategi.jpg"),
          "CC-BY-4.0 (Aitzol Berasategi)", "train"),
    Photo("seeding", "lomiri-wallpapers-16.04", _LOMIRI.format("seeding_by_Clements_Engelhardt.jpg"),
          "CC0-1.0 (Clemens Engelhardt)", "train"),
    Photo("sunset", "lomiri-wallpapers-16.04", _LOMIRI.format("sunset_by_Aitzol_Berasategi.jpg"),
          "CC-BY-4.0 (Aitzol Berasategi)", "train"),
    Photo("kleiber", "lomiri-wallpapers-20.04", _LOMIRI.format("Kleiber_by_Lukas_Baubkus.jpg"),
          "CC-BY-SA-3.0 (Lukas Baubkus)", "train"),
    # ---- Debian: mate-backgrounds (the nature set)
    Photo("aqua", "mate-backgrounds", _MATE.format("Aqua.jpg"), _MATE_LICENCE + "; Charles Barbin", "train"),
    Photo("blinds", "mate-backgrounds", _MATE.format("Blinds.jpg"), _MATE_LICENCE + "; L. Poettering", "train"),
    Photo("dune", "mate-backgrounds", _MATE.format("Dune.jpg"), _MATE_LICENCE + "; Marco Cogoni", "train"),
    Photo("fresh-flower", "mate-backgrounds", _MATE.format("FreshFlower.jpg"), _MATE_LICENCE + "; Jens Ansorg",
          "train"),
    Photo("garden", "mate-backgrounds", _MATE.format("Garden.jpg"), _MATE_LICENCE + "; Charles Barbin", "train"),
    Photo("green-meadow", "mate-backgrounds", _MATE.format("GreenMeadow.jpg"), _MATE_LICENCE + "; T. Schellhase",
          "train"),
    Photo("ladybird", "mate-backgrounds", _MATE.format("LadyBird.jpg"), _MATE_LICENCE + "; Charles Barbin", "test"),
    Photo("rain-drops", "mate-backgrounds", _MATE.format("RainDrops.jpg"), _MATE_LICENCE, "train"),
    Photo("storm", "mate-backgrounds", _MATE.format("Storm.jpg"), _MATE_LICENCE + "; Sergey Nazarov", "validation"),
    Photo("two-wings", "mate-backgrounds", _MATE.format("TwoWings.jpg"), _MATE_LICENCE + "; Charles Barbin",
          "train"),
    Photo("wood", "mate-backgrounds", _MATE.format("Wood.jpg"), _MATE_LICENCE + "; J.-F. Fortin Tam", "train"),
    Photo("yellow-flower", "mate-backgrounds", _MATE.format("YellowFlower.jpg"), _MATE_LICENCE + "; Charles Barbin",
          "train"),
)  # fmt: skip


def photos_in_split(split: str) -> list[Photo]:
    """The manifest's photos of one split (``"train"``, ``"validation"`` or ``"test"``), in manifest order."""
    if split not in SPLITS:
        raise ValueError(f"unknown photo split {split!r}; choose one of {SPLITS}")
    return [p for p in PHOTOS if p.split == split]


def installed_path(photo: Photo) -> Path | None:
    """Where ``photo`` is installed on this machine, or None when its package is not."""
    if photo.registry == "debian":
        path = Path(photo.path)
        return path if path.is_file() else None
    top, _, rest = photo.path.partition("/")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / rest
    return path if path.is_file() else None


class MissingPhotosError(FileNotFoundError):
    """Photos of the manifest whose packages are not installed; the message names what to install."""


def photo_paths(split: str, missing: str = "error") -> list[tuple[Photo, Path]]:
    """``(photo, installed file)`` for every photo of ``split``.

    ``missing="error"`` raises :class:`MissingPhotosError` naming the packages to install (pip for the
    Python ones, apt-get for the Debian ones); ``"skip"`` leaves the absent photos out.
    """
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
    found, absent = [], []
    for photo in photos_in_split(split):
        path = installed_path(photo)
        if path is None:
            absent.append(photo)
        else:
            found.append((photo, path))
    if absent and missing == "error":
        raise MissingPhotosError(missing_packages_message(absent, split))
    return found


def missing_packages_message(absent: Sequence[Photo], split: str) -> str:
    hints = sorted({p.install_hint for p in absent})
    names = ", ".join(p.name for p in absent)
    return f"{len(absent)} photo(s) of the {split!r} split are not installed ({names}); install: " + "; ".join(hints)


def image_files(folder: str | Path) -> list[Path]:
    """The image files under ``folder`` (recursively, sorted), for a folder given instead of the manifest."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return files


def resolve_photos(source: str | Path, missing: str = "error") -> list[Path]:
    """The files of a manifest split name (``"train"``, ``"photos:test"``) or of an image folder."""
    name = str(source).removeprefix("photos:")
    if name in SPLITS:
        return [path for _, path in photo_paths(name, missing)]
    return image_files(source)


def open_rgb(path: str | Path) -> PIL.Image.Image:
    """A photo as RGB (grayscale and palette photos converted, alpha dropped)."""
    with PIL.Image.open(path) as image:
        return image.convert("RGB")


def centre_square(image: PIL.Image.Image) -> PIL.Image.Image:
    """The largest centred square of ``image``."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return image.crop((left, top, left + side, top + side))


# ---------------------------------------------------------------------------------------------- crops
def photo_crop(image: PIL.Image.Image, rng: np.random.Generator, size: int, flip: bool = True) -> PIL.Image.Image:
    """A random square crop (side log-uniform in [size, shorter side]), maybe flipped, resized to ``size``."""
    w, h = image.size
    largest = min(w, h)
    if largest < size:
        image = image.resize((max(size, round(w * size / largest)), max(size, round(h * size / largest))),
                             PIL.Image.Resampling.LANCZOS)  # fmt: skip
        w, h = image.size
        largest = min(w, h)
    side = int(round(np.exp(rng.uniform(np.log(size), np.log(largest))))) if largest > size else size
    side = min(max(side, size), largest)
    left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    crop = image.crop((left, top, left + side, top + side))
    if flip and rng.integers(0, 2):
        crop = crop.transpose(PIL.Image.Transpose.FLIP_LEFT_RIGHT)
    return crop if side == size else crop.resize((size, size), PIL.Image.Resampling.LANCZOS)


def _png(image: PIL.Image.Image) -> dict:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _crop_rows(files: Sequence[Path], indices: Sequence[int], seed: int, size: int, flip: bool) -> Iterator[dict]:
    """Rows by photo (one photo decoded at a time), then returned in index order by the caller."""
    for k, path in enumerate(files):
        mine = [i for i in indices if i % len(files) == k]
        if not mine:
            continue
        image = open_rgb(path)
        for index in mine:
            crop = photo_crop(image, np.random.default_rng([seed, index]), size, flip)
            yield {"index": index, "image": _png(crop), "photo": path.name}


def make_photo_crops_dataset(
    source: str | Path | Sequence[str | Path] = "train",
    num_samples: int = 1000,
    seed: int = 0,
    *,
    size: int = 64,
    flip: bool = True,
    missing: str = "error",
):
    """A ``datasets.Dataset`` of ``num_samples`` seeded square crops (``image``, ``photo``: the file name).

    ``source`` is a split of :data:`PHOTOS` (``"train"``, ``"validation"``, ``"test"``), an image folder, or a
    list of image files. Row ``i`` is photo ``i mod P`` (see the module docstring).

    Example:
        >>> import PIL.Image, tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> PIL.Image.radial_gradient("L").convert("RGB").save(folder / "a.png")
        >>> ds = make_photo_crops_dataset(folder, 4, size=32)
        >>> len(ds), ds[0]["image"].size, ds[0]["photo"]
        (4, (32, 32), 'a.png')
    """
    import datasets

    if num_samples < 1 or size < 1:
        raise ValueError(f"num_samples and size must be >= 1, got {num_samples}, {size}")
    if isinstance(source, (str, Path)):
        files = resolve_photos(source, missing)
    else:
        files = [Path(p) for p in source]
    if not files:
        raise ValueError(f"no photos found for {source!r}")
    rows = sorted(_crop_rows(files, range(num_samples), seed, size, flip), key=lambda r: r["index"])
    features = datasets.Features({"image": datasets.Image(), "photo": datasets.Value("string")})
    return datasets.Dataset.from_dict(
        {"image": [r["image"] for r in rows], "photo": [r["photo"] for r in rows]}, features=features
    )
