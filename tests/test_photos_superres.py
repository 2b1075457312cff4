"""Issue 16, item 1 (library side): the offline photo manifest, photo crops, the BSR degradation as a training
option, and super-resolution evaluated on photos / other kernels / a shapes generator variant."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from ldm_hub.data import degradations
from ldm_hub.data.photos import (
    PHOTOS,
    SPLITS,
    MissingPhotosError,
    Photo,
    installed_path,
    make_photo_crops_dataset,
    missing_packages_message,
    photo_paths,
    photos_in_split,
)
from ldm_hub.training.data import ImageTransform

HAS_PYPI_PHOTOS = all(importlib.util.find_spec(m) for m in ("skimage", "sklearn", "matplotlib"))
DEBIAN_PACKAGES = sorted({p.package for p in PHOTOS if p.registry == "debian"})
SHIPPED_SR = Path(__file__).resolve().parents[1] / "src/ldm_hub/default_models/shapes-superres"


def _folder_of_photos(tmp_path, n=3, size=(80, 50)) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        PIL.Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(tmp_path / f"p{i}.png")
    return tmp_path


# ---------------------------------------------------------------------------------------------- the manifest
def test_manifest_counts_splits_and_sources():
    counts = Counter(p.split for p in PHOTOS)
    assert set(counts) == set(SPLITS)
    assert len(PHOTOS) >= 40 and counts["validation"] >= 4 and counts["test"] >= 8
    assert len({p.name for p in PHOTOS}) == len(PHOTOS) and len({p.path for p in PHOTOS}) == len(PHOTOS)
    assert all(p.licence for p in PHOTOS)
    assert not any("opencv" in (p.package + p.path).lower() for p in PHOTOS)  # the independent check stays out
    # one resolution per wallpaper: no two entries from the same plasma wallpaper folder
    plasma = [p.path.split("/")[4] for p in PHOTOS if p.path.startswith("/usr/share/wallpapers/")]
    assert len(plasma) == len(set(plasma))
    # CI (no apt packages) still has a sample of every split from the Python packages
    pypi = Counter(p.split for p in PHOTOS if p.registry == "pypi")
    assert pypi["test"] >= 4 and pypi["validation"] >= 2 and pypi["train"] >= 4


def test_missing_package_is_named(monkeypatch):
    absent = [
        Photo("x", "no-such-wallpapers", "/usr/share/backgrounds/no-such/x.jpg", "CC0", "test"),
        Photo("y", "no-such-dist", "no_such_module_ldm_hub/y.png", "CC0", "test"),
    ]
    assert installed_path(absent[0]) is None and installed_path(absent[1]) is None
    message = missing_packages_message(absent, "test")
    assert "apt-get install no-such-wallpapers" in message and "pip install no-such-dist" in message
    import ldm_hub.data.photos as photos

    monkeypatch.setattr(photos, "PHOTOS", tuple(absent))
    with pytest.raises(MissingPhotosError, match="apt-get install no-such-wallpapers"):
        photo_paths("test")
    assert photo_paths("test", missing="skip") == []
    with pytest.raises(ValueError, match="unknown photo split"):
        photos_in_split("dev")


@pytest.mark.skipif(not HAS_PYPI_PHOTOS, reason="scikit-image / scikit-learn / matplotlib not installed (dev extra)")
def test_pypi_photos_are_installed_photographs():
    for photo in (p for p in PHOTOS if p.registry == "pypi"):
        path = installed_path(photo)
        assert path is not None, photo
        with PIL.Image.open(path) as image:
            assert min(image.size) >= 256, (photo.name, image.size)


@pytest.mark.parametrize("package", DEBIAN_PACKAGES)
def test_debian_photos_are_installed(package):
    if not Path(f"/usr/share/doc/{package}").is_dir():
        pytest.skip(f"Debian package {package} not installed (apt-get install {package})")
    for photo in (p for p in PHOTOS if p.package == package):
        path = installed_path(photo)
        assert path is not None, photo
        with PIL.Image.open(path) as image:
            assert min(image.size) >= 256, (photo.name, image.size)


# ---------------------------------------------------------------------------------------------- crops
def test_photo_crops_are_seeded_row_independent_and_multiscale(tmp_path):
    folder = _folder_of_photos(tmp_path)
    a = make_photo_crops_dataset(folder, 12, seed=5, size=16)
    b = make_photo_crops_dataset(folder, 6, seed=5, size=16)
    c = make_photo_crops_dataset(folder, 6, seed=6, size=16)
    assert a.column_names == ["image", "photo"] and a[0]["image"].size == (16, 16)
    assert [r["photo"] for r in a] == [f"p{i % 3}.png" for i in range(12)]  # row i is photo i mod P
    same = [np.array_equal(np.asarray(a[i]["image"]), np.asarray(b[i]["image"])) for i in range(6)]
    other = [np.array_equal(np.asarray(a[i]["image"]), np.asarray(c[i]["image"])) for i in range(6)]
    assert all(same) and not any(other)
    # several scales and both flips over many draws (photo_crop on one image)
    from ldm_hub.data.photos import photo_crop

    image = PIL.Image.fromarray(np.arange(200 * 300 * 3, dtype=np.uint32).reshape(200, 300, 3).astype(np.uint8))
    sides = []
    for i in range(200):
        rng = np.random.default_rng([0, i])
        state = rng.bit_generator.state
        photo_crop(image, rng, 16)
        rng.bit_generator.state = state
        sides.append(int(round(np.exp(rng.uniform(np.log(16), np.log(200))))))
    assert min(sides) < 32 and max(sides) > 150


def test_photos_dataset_specs_and_mixtures(tmp_path):
    from ldm_hub.training.config import DataConfig
    from ldm_hub.training.data import open_dataset

    folder = _folder_of_photos(tmp_path)
    ds = open_dataset(DataConfig(dataset=f"photos:{folder}:5:1", resolution=32))
    assert len(ds) == 5 and ds[0]["image"].size == (32, 32)
    mixed = open_dataset(DataConfig(dataset=f"shapes:3+photos:{folder}:4", resolution=64))
    assert len(mixed) == 7 and mixed.column_names == ["image"]
    for bad in ("photos:train", "photos:train:x", f"photos:{folder}:0"):
        with pytest.raises(ValueError, match="photos:SPLIT:ROWS"):
            open_dataset(DataConfig(dataset=bad))


# ---------------------------------------------------------------------------------------------- degradations
def test_bsr_takes_every_branch_and_is_seeded():
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    bsr = degradations.BSRDegradation()
    counts: Counter = Counter()
    draws = 2000
    for i in range(draws):
        low, branches = bsr.sample(image, 8, np.random.default_rng([7, i]))
        counts.update(branches)
    assert low.size == (8, 8)
    shares = {b: counts[b] / draws for b in degradations.BSR_BRANCHES}
    assert all(share >= 0.05 for share in shares.values()), shares
    one = bsr(image, 8, np.random.default_rng([7, 3]))
    again = bsr(image, 8, np.random.default_rng([7, 3]))
    assert np.array_equal(np.asarray(one), np.asarray(again))


def test_fixed_kernels_and_names():
    image = PIL.Image.radial_gradient("L").convert("RGB").resize((64, 64))
    for name in degradations.FIXED:
        assert degradations.make_degradation(name)(image, 16, None).size == (16, 16)
    area = np.asarray(degradations.make_degradation("area")(image, 16, None), dtype=float)
    blocks = np.asarray(image, dtype=float).reshape(16, 4, 16, 4, 3).mean((1, 3))
    assert np.abs(area - blocks).max() <= 1.0  # area averaging: the mean of each 4×4 block (PIL's rounding)
    kernel = degradations.gaussian_kernel(9, 1.0, 3.0, 0.3)
    assert kernel.shape == (9, 9) and abs(kernel.sum() - 1) < 1e-12 and not np.allclose(kernel, kernel.T)
    with pytest.raises(ValueError, match="unknown degradation 'box'"):
        degradations.make_degradation("box")


def _old_transform(example, resolution, low_res_size, crop, flip, seed, epoch, index):
    """ImageTransform's low-res path as it was before --degradation (a frozen copy of the reference logic)."""
    image = example["image"]
    rng = np.random.default_rng([seed, epoch, index])
    untouched = image.size == (resolution, resolution)
    if not untouched:
        w, h = image.size
        scale = resolution / min(w, h)
        size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
        image = image.resize(size, PIL.Image.Resampling.BICUBIC)
        w, h = image.size
        if crop == "random":
            left, top = int(rng.integers(0, w - resolution + 1)), int(rng.integers(0, h - resolution + 1))
        else:
            left, top = (w - resolution) // 2, (h - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
    flipped = flip and bool(rng.integers(0, 2))
    if flipped:
        image = image.transpose(PIL.Image.Transpose.FLIP_LEFT_RIGHT)
    low = example.get("low_res") if untouched else None
    if low is None or low.size != (low_res_size, low_res_size):
        low = image.resize((low_res_size, low_res_size), PIL.Image.Resampling.BICUBIC)
    elif flipped:
        low = low.transpose(PIL.Image.Transpose.FLIP_LEFT_RIGHT)
    to = lambda im: torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)
    return to(image), to(low)


def test_bicubic_degradation_reproduces_todays_data_bit_for_bit(tmp_path):
    from ldm_hub.data.shapes import make_shapes_dataset
    from ldm_hub.training.config import LDMTrainingConfig
    from ldm_hub.training.ldm import low_res_degradation

    assert LDMTrainingConfig().degradation == "bicubic"
    assert low_res_degradation("bicubic", 16) is None  # the option's default leaves today's path untouched
    shapes = make_shapes_dataset(4)
    photos = make_photo_crops_dataset(_folder_of_photos(tmp_path, size=(90, 70)), 4, size=80)
    examples = [{"image": r["image"], "low_res": r["low_res"]} for r in shapes] + [
        {"image": r["image"]} for r in photos
    ]
    for crop, flip in (("center", False), ("random", True)):
        transform = ImageTransform(64, crop, flip, 3, 16, degradation=low_res_degradation("bicubic", 16))
        for index, example in enumerate(examples):
            for epoch in (0, 1):
                out = transform(dict(example), epoch, index)
                image, low = _old_transform(example, 64, 16, crop, flip, 3, epoch, index)
                assert torch.equal(out["pixel_values"], image) and torch.equal(out["low_res"], low)
    # and the fixed bicubic kernel equals it on rows without their own low-res image
    fixed = ImageTransform(64, "random", True, 3, 16, degradation=degradations.make_degradation("bicubic"))
    plain = ImageTransform(64, "random", True, 3, 16)
    for index, example in enumerate(examples[4:]):
        assert torch.equal(fixed(dict(example), 0, index)["low_res"], plain(dict(example), 0, index)["low_res"])


def test_bsr_degradation_in_the_transform_keeps_crops_and_varies_by_epoch():
    from ldm_hub.data.shapes import make_shapes_dataset
    from ldm_hub.training.ldm import low_res_degradation

    example = {"image": make_shapes_dataset(1)[0]["image"]}
    bsr = ImageTransform(64, "random", True, 0, 16, degradation=low_res_degradation("bsr", 16))
    plain = ImageTransform(64, "random", True, 0, 16)
    a, b = bsr(dict(example), 0, 0), plain(dict(example), 0, 0)
    assert torch.equal(a["pixel_values"], b["pixel_values"]) and a["low_res"].shape == (3, 16, 16)
    lows = [bsr(dict(example), e, 0)["low_res"] for e in range(6)]
    assert torch.equal(lows[0], bsr(dict(example), 0, 0)["low_res"])
    assert any(not torch.equal(lows[0], other) for other in lows[1:])
    with pytest.raises(ValueError, match="--degradation bsr applies to a model that takes a low-res image"):
        low_res_degradation("bsr", None)


# ---------------------------------------------------------------------------------------------- evaluation
def test_photo_metrics_and_variant_generator():
    from ldm_hub.data.shapes import COLORS
    from ldm_hub.evaluation_superres import (
        check_bars,
        color_error,
        mean_gradient,
        score_photos,
        variant_palette,
        variant_scene,
    )

    image = PIL.Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    flat = PIL.Image.new("RGB", (32, 32), (10, 20, 30))
    assert mean_gradient(flat) == 0 and mean_gradient(image) > 10
    assert color_error(flat, PIL.Image.new("RGB", (32, 32), (13, 20, 36))) == pytest.approx(3.0)
    small = image.resize((8, 8), PIL.Image.Resampling.BOX)
    scores = score_photos([image], [small], [image], ["x.png"])
    assert scores["color_error"] == 0 and scores["sharper_fraction"] == 1 and scores["psnr"] == float("inf")
    bars = check_bars({"area/color_error": 7.0, "area/psnr_gain_over_bicubic": 0.0},
                      {"area/color_error": 6.0, "area/psnr_gain_over_bicubic": -0.5})  # fmt: skip
    assert not bars["area/color_error"]["passed"] and bars["area/psnr_gain_over_bicubic"]["passed"]
    for name, color in variant_palette().items():
        assert all(20 <= abs(a - b) <= 30 or b in (0, 255) for a, b in zip(COLORS[name], color))
    scenes = [np.asarray(variant_scene(i)) for i in range(4)]
    assert all(s.shape == (64, 64, 3) for s in scenes) and np.array_equal(scenes[0], np.asarray(variant_scene(0)))


@pytest.mark.skipif(not HAS_PYPI_PHOTOS, reason="scikit-image / scikit-learn / matplotlib not installed (dev extra)")
def test_cli_evaluates_the_photo_protocol_on_the_shipped_model(tmp_path):
    out = tmp_path / "photos.json"
    cmd = [sys.executable, "-m", "ldm_hub.cli", "evaluate", str(SHIPPED_SR), "--task", "superres", "--data",
           "photos:test", "--num-samples", "2", "--steps", "2", "--json", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["data"] == "photos:test" and result["degradation"] == ["area"] and result["num_samples"] == 2
    area = result["metrics"]["area"]
    assert [p["photo"] for p in area["per_photo"]] == ["astronaut.png", "chelsea.png"]
    assert set(result["thresholds"]) == {"area/psnr_gain_over_bicubic", "area/sharper_fraction", "area/color_error"}
    assert 15 < area["bicubic_psnr"] < 40
    bad = subprocess.run([*cmd[:5], "--task", "text", "--data", "photos:test"], capture_output=True, text=True,
                         env=env, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "other data is scored for ['superres']" in bad.stderr
