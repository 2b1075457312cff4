"""Super-resolution measured outside the shapes dataset's own scenes: photographs, other kernels, another generator.

``ldm-hub evaluate MODEL --task superres --data DATA [--degradation KERNELS]`` (or :func:`evaluate_superres`):

=====================  ==========================================================================================
``--data``             what is scored
=====================  ==========================================================================================
``photos:SPLIT``       the photo manifest's split (:mod:`ldm_hub.data.photos`; ``test`` gives the reported numbers)
an image folder        every image in it, the same way
``shapes``             the held-out shapes scenes, their low-res input remade with each ``--degradation`` kernel
``shapes-variant``     scenes of a generator variant never used in training (:func:`variant_scene`), per kernel
=====================  ==========================================================================================

The photo protocol (issue 16): photo ``i`` → its centre square → 128² with Lanczos → ``--degradation``
(default ``area``) to 32² → the pipeline, tiled (``tile_size=64, tile_overlap=16``), ``--steps`` DDIM steps, seed
``SEED + i`` → compared with the 128² image. Per photo and averaged: PSNR against bicubic upsampling of the same
32² input; sharpness, the mean gradient magnitude of the luminance (:func:`mean_gradient`), and whether it is
closer to the original's than bicubic's is (``sharper_fraction``: the share of photos where it is); the colour
error, the mean over R, G, B of |mean channel value of the output − of the original| in 0–255 units (a colour
cast; the per-pixel mean absolute error is reported beside it). Bars: PSNR ≥ bicubic − 0.5 dB, sharper on ≥ 70 %
of the photos, colour error ≤ 6.

The shapes checks score PSNR against bicubic per kernel (``area``, ``bicubic``, ``bilinear``, ``nearest``,
``lanczos``, ``blur+area`` by default for ``shapes-variant``; bar: ≥ +2.5 dB for every kernel) and, beside it, the
in-distribution figure: the original generator's held-out scenes with their own bicubic input.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw

from .data.degradations import FIXED, make_degradation
from .data.photos import centre_square, open_rgb, resolve_photos

PHOTO_SIZE, PHOTO_LOW_RES_SIZE = 128, 32
TILE_SIZE, TILE_OVERLAP = 64, 16
PHOTO_BARS = {"psnr_gain_over_bicubic": -0.5, "sharper_fraction": 0.70, "color_error": 6.0}
LOWER_IS_BETTER = ("color_error",)
VARIANT_KERNELS = FIXED  # area, bicubic, bilinear, nearest, lanczos, blur+area
VARIANT_BAR = 2.5
VARIANT_SEED = 16_016  # the variant's palette shift and its scenes' stream (never a training seed)
SHAPES_DATA = ("shapes", "shapes-variant")


# ---------------------------------------------------------------------------------------------- metrics
def mean_gradient(image) -> float:
    """Mean gradient magnitude of the luminance (forward differences, 0–255 units): a sharpness measure."""
    rgb = np.asarray(image, dtype=np.float64)
    y = rgb @ np.array([0.299, 0.587, 0.114])  # (H, W)
    gx, gy = np.diff(y, axis=1)[:-1, :], np.diff(y, axis=0)[:, :-1]
    return float(np.sqrt(gx**2 + gy**2).mean())


def color_error(a, b) -> float:
    """Mean over the channels of |mean(a_c) − mean(b_c)| (0–255 units): a colour cast between two images."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(x.reshape(-1, 3).mean(0) - y.reshape(-1, 3).mean(0)).mean())


def _psnr(a, b) -> float:
    from .evaluation import psnr

    return psnr(a, b)


def score_photos(originals, low_res, outputs, names: Sequence[str] = ()) -> dict:
    """The photo protocol's metrics (module docstring), averaged and per photo."""
    per_photo = []
    for i, (original, small, output) in enumerate(zip(originals, low_res, outputs)):
        bicubic = small.resize(original.size, PIL.Image.Resampling.BICUBIC)
        g_original, g_output, g_bicubic = mean_gradient(original), mean_gradient(output), mean_gradient(bicubic)
        per_photo.append(
            {
                "photo": names[i] if i < len(names) else str(i),
                "psnr": _psnr(output, original),
                "bicubic_psnr": _psnr(bicubic, original),
                "gradient": g_output,
                "bicubic_gradient": g_bicubic,
                "original_gradient": g_original,
                "sharper": bool(abs(g_output - g_original) < abs(g_bicubic - g_original)),
                "color_error": color_error(output, original),
                "mean_abs_error": float(np.abs(np.asarray(output, float) - np.asarray(original, float)).mean()),
            }
        )
    mean = lambda key: float(np.mean([p[key] for p in per_photo]))
    return {
        "psnr": mean("psnr"),
        "bicubic_psnr": mean("bicubic_psnr"),
        "psnr_gain_over_bicubic": mean("psnr") - mean("bicubic_psnr"),
        "sharper_fraction": mean("sharper"),
        "gradient_ratio_to_original": mean("gradient") / max(mean("original_gradient"), 1e-12),
        "bicubic_gradient_ratio_to_original": mean("bicubic_gradient") / max(mean("original_gradient"), 1e-12),
        "color_error": mean("color_error"),
        "mean_abs_error": mean("mean_abs_error"),
        "per_photo": per_photo,
    }


def check_bars(metrics: dict, bars: dict) -> dict:
    """``{metric: {"value", "threshold", "passed"}}``; :data:`LOWER_IS_BETTER` metrics (also as ``kernel/name``) pass
    at or below the bar."""
    out = {}
    for name, bar in bars.items():
        if name not in metrics:
            raise ValueError(f"this evaluation has no metric {name!r}; it reports {sorted(metrics)}")
        value = metrics[name]
        passed = value <= bar if name.rpartition("/")[2] in LOWER_IS_BETTER else value >= bar
        out[name] = {"value": value, "threshold": bar, "passed": bool(passed)}
    return out


# ---------------------------------------------------------------------------------------------- data
def photo_pair(path, degradation: str = "area", rng=None) -> tuple[PIL.Image.Image, PIL.Image.Image]:
    """(the 128² original, its 32² low-res input) of one photo, as the protocol makes them."""
    original = centre_square(open_rgb(path)).resize((PHOTO_SIZE, PHOTO_SIZE), PIL.Image.Resampling.LANCZOS)
    return original, make_degradation(degradation)(original, PHOTO_LOW_RES_SIZE, rng)


def variant_palette() -> dict[str, tuple[int, int, int]]:
    """The shapes palette with every channel of every colour shifted by 20–30 (a fixed, seeded sign and size)."""
    from .data.shapes import COLORS

    rng = np.random.default_rng([VARIANT_SEED, 0])
    out = {}
    for name, color in COLORS.items():
        shift = rng.integers(20, 31, size=3) * rng.choice([-1, 1], size=3)
        shifted = np.clip(np.array(color) + shift, 0, 255)
        out[name] = tuple(int(v) for v in shifted)
    return out


def variant_scene(index: int, seed: int = VARIANT_SEED, size: int = 64) -> PIL.Image.Image:
    """Scene ``index`` of the shapes generator variant: 1–3 shapes of side 12–32 px (non-overlapping), the shifted
    palette (:func:`variant_palette`), a background of level (200, 206, 214) with Gaussian noise (σ 4)."""
    from .data.shapes import SHAPES, SUPERSAMPLE

    rng = np.random.default_rng([seed, index])
    palette = variant_palette()
    count = int(rng.integers(1, 4))
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(200):
        if len(boxes) == count:
            break
        side = int(rng.integers(12, 33))
        x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        box = (x0, y0, x0 + side, y0 + side)
        if all(box[2] + 2 <= b[0] or b[2] + 2 <= box[0] or box[3] + 2 <= b[1] or b[3] + 2 <= box[1] for b in boxes):
            boxes.append(box)
    big = size * SUPERSAMPLE
    canvas = PIL.Image.new("RGB", (big, big), (200, 206, 214))
    draw = PIL.ImageDraw.Draw(canvas)
    for x0, y0, x1, y1 in (tuple(v * SUPERSAMPLE for v in b) for b in boxes):
        fill = palette[list(palette)[int(rng.integers(len(palette)))]]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        if shape == "square":
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
        elif shape == "circle":
            draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
        else:
            draw.polygon([(x0, y1 - 1), ((x0 + x1 - 1) / 2, y0), (x1 - 1, y1 - 1)], fill=fill)
    image = np.asarray(canvas.resize((size, size), PIL.Image.Resampling.BOX), dtype=np.float64)
    image = image + rng.normal(0.0, 4.0, size=(size, size, 1))
    return PIL.Image.fromarray(np.clip(image.round(), 0, 255).astype(np.uint8))


def _kernels(degradation: str | None, default: Sequence[str]) -> list[str]:
    if degradation is None:
        return list(default)
    names = [k.strip() for k in degradation.split(",") if k.strip()]
    names = list(VARIANT_KERNELS) if names == ["kernels"] else names
    for name in names:
        if name not in FIXED:
            raise ValueError(f"--degradation {name!r}: choose from {FIXED} (comma-separated), or 'kernels' for all")
    return names


# ---------------------------------------------------------------------------------------------- running
def _generate(pipe, images, seeds, steps, device, batch_size, tiled) -> list[PIL.Image.Image]:
    import torch

    from .evaluation import _to_pil

    out = []
    tiles = dict(tile_size=TILE_SIZE, tile_overlap=TILE_OVERLAP) if tiled else {}
    per_call = 1 if tiled else batch_size
    for b in range(0, len(images), per_call):
        generators = [torch.Generator(device).manual_seed(s) for s in seeds[b : b + per_call]]
        result = pipe(image=images[b : b + per_call], num_inference_steps=steps, generator=generators,
                      output_type="np", **tiles)  # fmt: skip
        out += [_to_pil(a) for a in result.images]
    return out


def evaluate_superres(
    model: str,
    data: str,
    degradation: str | None = None,
    num_samples: int = 200,
    seed: int = 0,
    steps: int = 50,
    batch_size: int = 16,
    device: str = "cpu",
    save_images: str | None = None,
    progress: bool = True,
    fail_under: dict[str, float] | None = None,
) -> dict:
    """Score a super-resolution pipeline on ``data`` (module docstring); a JSON-ready dict like ``evaluate``'s."""
    from .evaluation import HELD_OUT_SEED, score_superres
    from .pipelines.ldm_pipeline import LDMPipeline

    if num_samples < 1 or batch_size < 1 or steps < 1:
        raise ValueError("num_samples, batch_size and steps must be >= 1")
    if data not in SHAPES_DATA:
        files = resolve_photos(data)[:num_samples]  # before the model loads: a missing package is named now
        kernels = _kernels(degradation, ["area"])
    else:
        kernels = _kernels(degradation, VARIANT_KERNELS if data == "shapes-variant" else ["bicubic"])
    pipe = LDMPipeline.from_pretrained(model).to(device)
    pipe.set_progress_bar_config(disable=True)
    if "image" not in pipe.accepted_inputs:
        raise ValueError(f"{model} is a {pipe.conditioning!r} model; --data needs a super-resolution model")
    start = time.perf_counter()
    saved: dict[str, list] = {}
    metrics: dict = {}
    bars: dict = {}
    if data not in SHAPES_DATA:
        for kernel in kernels:
            pairs = [photo_pair(path, kernel) for path in files]
            seeds = [seed + i for i in range(len(files))]
            outputs = _generate(pipe, [p[1] for p in pairs], seeds, steps, device, batch_size, tiled=True)
            metrics[kernel] = score_photos([p[0] for p in pairs], [p[1] for p in pairs], outputs,
                                           [f.name for f in files])  # fmt: skip
            saved[kernel] = outputs
            bars.update({f"{kernel}/{k}": v for k, v in PHOTO_BARS.items()})
            if progress:
                print(f"  {kernel}: {len(files)} photos, {time.perf_counter() - start:.0f} s", flush=True)
    else:
        from .data.shapes import make_shapes_dataset

        held_out = make_shapes_dataset(num_samples, seed=HELD_OUT_SEED)
        shapes_rows = [held_out[i] for i in range(num_samples)]
        originals = (
            [variant_scene(i) for i in range(num_samples)] if data == "shapes-variant"
            else [r["image"] for r in shapes_rows]
        )  # fmt: skip
        seeds = [seed + i for i in range(num_samples)]
        for kernel in kernels:
            low = [make_degradation(kernel)(o, o.size[0] // 4, None) for o in originals]
            outputs = _generate(pipe, low, seeds, steps, device, batch_size, tiled=False)
            scores = score_superres(originals, low, outputs)
            if data == "shapes-variant":
                scores.pop("shape_accuracy")  # the variant's palette is not the detector's
            metrics[kernel] = scores
            saved[kernel] = outputs
            bars[f"{kernel}/psnr_gain_over_bicubic"] = VARIANT_BAR
            if progress:
                print(f"  {kernel}: {num_samples} scenes, {time.perf_counter() - start:.0f} s", flush=True)
        if data == "shapes-variant":
            rows = shapes_rows
            outputs = _generate(pipe, [r["low_res"] for r in rows], seeds, steps, device, batch_size, tiled=False)
            metrics["in_distribution"] = score_superres([r["image"] for r in rows], [r["low_res"] for r in rows],
                                                        outputs)  # fmt: skip
    seconds = time.perf_counter() - start
    flat = {f"{k}/{name}": v for k, m in metrics.items() for name, v in m.items() if name != "per_photo"}
    if save_images:
        for kernel, images in saved.items():
            folder = Path(save_images) / kernel.replace("+", "-")
            folder.mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(images):
                image.save(folder / f"{i:04d}.png")
    result = {
        "model": str(model), "task": "superres", "data": data, "degradation": kernels,
        "num_samples": len(files) if data not in SHAPES_DATA else num_samples, "seed": seed, "steps": steps,
        "metrics": metrics, "thresholds": check_bars(flat, bars), "seconds": round(seconds, 2),
    }  # fmt: skip
    if data not in SHAPES_DATA:
        result["protocol"] = (
            f"centre square -> {PHOTO_SIZE}^2 Lanczos -> {PHOTO_LOW_RES_SIZE}^2 by the kernel -> pipeline tiled "
            f"(tile_size={TILE_SIZE}, tile_overlap={TILE_OVERLAP}), seed = {seed} + photo index"
        )
        result["seconds_per_image"] = round(seconds / max(1, len(files) * len(kernels)), 2)
    result["passed"] = all(t["passed"] for t in result["thresholds"].values())
    if fail_under:
        wanted = {f"{k}/{name}": bar for name, bar in fail_under.items() for k in kernels}
        result["fail_under"] = check_bars(flat, wanted)
    return result


def evaluate_autoencoder_photos(model: str, data: str, num_samples: int = 200, device: str = "cpu") -> dict:
    """Reconstruction PSNR of D(E(x)) on the protocol's 128² photos, beside bicubic upsampling of their area-
    downsampled 32² copies: the first stage's gate (it caps what a latent super-resolution model can reach)."""
    from .evaluation import load_autoencoder, reconstruct

    files = resolve_photos(data)[:num_samples]
    pairs = [photo_pair(path, "area") for path in files]
    start = time.perf_counter()
    vae = load_autoencoder(model).to(device).eval()
    outputs = reconstruct(vae, [p[0] for p in pairs])
    per_photo = [
        {
            "photo": f.name,
            "psnr": _psnr(out, orig),
            "bicubic_psnr": _psnr(low.resize(orig.size, PIL.Image.BICUBIC), orig),
        }
        for f, (orig, low), out in zip(files, pairs, outputs)
    ]
    psnr, bicubic = (float(np.mean([p[k] for p in per_photo])) for k in ("psnr", "bicubic_psnr"))
    metrics = {"psnr": psnr, "bicubic_psnr": bicubic, "psnr_gain_over_bicubic": psnr - bicubic, "per_photo": per_photo}
    result = {
        "model": str(model), "task": "autoencoder", "data": data, "num_samples": len(files), "metrics": metrics,
        "thresholds": check_bars(metrics, {"psnr_gain_over_bicubic": 3.0}),
        "seconds": round(time.perf_counter() - start, 2),
    }  # fmt: skip
    result["passed"] = all(t["passed"] for t in result["thresholds"].values())
    return result
