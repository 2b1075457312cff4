"""Quality measured with the shapes dataset's known geometry (no learned metric).

A generated 64×64 image is read back into labelled boxes by plain image analysis:

1. **colour segmentation** — every pixel's hue and saturation (HSV); a pixel belongs to an object when its
   saturation is at least half that of the palette colour nearest in hue (the background is almost grey, so
   an anti-aliased edge pixel keeps its object's hue and counts when it is at least about half covered);
2. **connected components** (8-connected) per colour; components smaller than ``min_area`` are noise;
3. **fill ratio → shape**: a component covers all of its bounding box if it is a square, π/4 if a circle,
   ½ if a triangle (:data:`ldm_hub.data.shapes.FILL_RATIO`); the nearest ratio names the shape.

On the dataset's own images this recovers every label and box (tests/test_evaluate.py checks it), so a
model's score measures the model. The metrics per task (the bars of issue 4):

==============  ========================================================================  ===============
task            metric                                                                    bar
==============  ========================================================================  ===============
text            caption only: the requested colours+shapes present, nothing extra          accuracy ≥ 0.80
layout          boxes given: mean IoU requested box ↔ matched shape; labels all right     IoU ≥ 0.85, ≥ 0.90
                (a ``"layout"`` model gets ``layout=``; a ``"semantic"`` one the boxes drawn as a map)
superres        PSNR of the 4× output vs the original, against bicubic; shapes read right  ≥ bicubic+3 dB, ≥ 0.95
autoencoder     reconstruction PSNR of D(E(x))                                             ≥ 30 dB
==============  ========================================================================  ===============

Example:
    >>> from ldm_hub.data.shapes import render_layout
    >>> layout = [{"label": "red circle", "box": [0.1, 0.1, 0.4, 0.4]}]
    >>> [d["label"] for d in detect_shapes(render_layout(layout))]
    ['red circle']
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image

from .data.shapes import COLORS, FILL_RATIO

# Held-out rows: the training commands use seed 0 by default; evaluation draws scenes from another stream.
HELD_OUT_SEED = 1_000_003
# Smallest component counted as an object, as a fraction of the image area (the smallest dataset shape, a
# triangle of side 0.22, covers about 2.4%).
MIN_AREA_FRACTION = 0.005
# A pixel is "object" when its saturation reaches this fraction of its palette colour's saturation.
SATURATION_FRACTION = 0.5
# At most this many detections (largest first) enter the box matching.
MAX_MATCHED_DETECTIONS = 8

AUTOENCODER_THRESHOLDS = {"psnr": 30.0}


# ---------------------------------------------------------------------------------------------- image analysis
def _hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hue in degrees [0, 360) and saturation in [0, 1] of an (..., 3) float array in [0, 255]."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    high, low = rgb.max(-1), rgb.min(-1)
    delta = high - low
    safe = np.where(delta == 0, 1.0, delta)
    hue = np.where(high == r, (g - b) / safe % 6, np.where(high == g, (b - r) / safe + 2, (r - g) / safe + 4)) * 60.0
    saturation = np.where(high == 0, 0.0, delta / np.where(high == 0, 1.0, high))
    return hue, saturation


_PALETTE_NAMES = list(COLORS)
_PALETTE_HUE, _PALETTE_SATURATION = _hsv(np.array([COLORS[n] for n in _PALETTE_NAMES], dtype=np.float64))


def segment_colors(image) -> np.ndarray:
    """Per-pixel colour index (H, W): −1 for background, else the index into ``COLORS``."""
    rgb = np.asarray(image.convert("RGB") if isinstance(image, PIL.Image.Image) else image, dtype=np.float64)
    hue, saturation = _hsv(rgb)
    distance = np.abs(hue[..., None] - _PALETTE_HUE)  # (H, W, K)
    distance = np.minimum(distance, 360.0 - distance)
    nearest = distance.argmin(-1)  # (H, W)
    is_object = saturation >= SATURATION_FRACTION * _PALETTE_SATURATION[nearest]
    return np.where(is_object, nearest, -1)


def connected_components(mask: np.ndarray) -> list[np.ndarray]:
    """8-connected components of a boolean mask, each as an (N, 2) array of (y, x) pixel coordinates."""
    height, width = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    components = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        stack, pixels = [(int(y0), int(x0))], []
        while stack:
            y, x = stack.pop()
            pixels.append((y, x))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
        components.append(np.array(pixels))
    return components


def classify_fill(fill: float) -> str:
    """The shape whose box fill ratio (square 1, circle π/4, triangle ½) is nearest to ``fill``."""
    return min(FILL_RATIO, key=lambda shape: abs(FILL_RATIO[shape] - fill))


def detect_shapes(image, min_area_fraction: float = MIN_AREA_FRACTION) -> list[dict]:
    """The objects in an image: ``[{"label", "box", "fill", "area"}]`` sorted left to right.

    ``box`` is [x0, y0, x1, y1] in [0, 1] (origin top-left, as the layout format), ``fill`` the fraction of
    the box the component covers, ``area`` its pixel count.
    """
    colors = segment_colors(image)
    height, width = colors.shape
    min_area = min_area_fraction * height * width
    found = []
    for index, name in enumerate(_PALETTE_NAMES):
        for pixels in connected_components(colors == index):
            if len(pixels) < min_area:
                continue
            y0, x0 = pixels.min(0)
            y1, x1 = pixels.max(0) + 1
            fill = len(pixels) / float((x1 - x0) * (y1 - y0))
            found.append(
                {
                    "label": f"{name} {classify_fill(fill)}",
                    "box": [x0 / width, y0 / height, x1 / width, y1 / height],
                    "fill": fill,
                    "area": len(pixels),
                }
            )
    found.sort(key=lambda d: (d["box"][0] + d["box"][2], d["box"][1]))
    return found


# ---------------------------------------------------------------------------------------------- metrics
def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two [x0, y0, x1, y1] boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def labels_match(requested: Sequence[str], detected: Sequence[str]) -> bool:
    """Every requested label present and nothing extra (as multisets)."""
    return Counter(requested) == Counter(detected)


def match_layout(layout: Sequence[dict], detections: Sequence[dict]) -> tuple[list[float], bool]:
    """Assign detections to the requested boxes maximising the total IoU (exhaustive: a scene has ≤ 3 objects).

    Returns the IoU of every requested box (0 when unmatched) and whether the image is right: one detection
    per requested object, each with the requested label, and no extra objects.
    """
    candidates = sorted(detections, key=lambda d: -d["area"])[:MAX_MATCHED_DETECTIONS]
    n = len(layout)
    best, best_pick = -1.0, ()
    for pick in itertools.permutations(range(len(candidates)), min(n, len(candidates))):
        total = sum(box_iou(layout[i]["box"], candidates[j]["box"]) for i, j in enumerate(pick))
        if total > best:
            best, best_pick = total, pick
    ious = [box_iou(layout[i]["box"], candidates[j]["box"]) for i, j in enumerate(best_pick)]
    ious += [0.0] * (n - len(ious))
    labels_right = len(detections) == n and all(
        layout[i]["label"] == candidates[j]["label"] for i, j in enumerate(best_pick)
    )
    return ious, labels_right


def psnr(a, b) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 images (or arrays in [0, 255])."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def score_text(captions: Sequence[str], images) -> dict:
    """Caption-only accuracy and its failure modes (extra / missing objects, wrong colour or shape)."""
    from .data.shapes import parse_caption

    right = extra = missing = swapped = 0
    for caption, image in zip(captions, images):
        requested = parse_caption(caption)
        detected = [d["label"] for d in detect_shapes(image)]
        if labels_match(requested, detected):
            right += 1
        elif len(detected) > len(requested):
            extra += 1
        elif len(detected) < len(requested):
            missing += 1
        else:
            swapped += 1
    n = len(captions)
    return {
        "accuracy": right / n,
        "extra_object_rate": extra / n,
        "missing_object_rate": missing / n,
        "wrong_label_rate": swapped / n,
    }


def score_layout(layouts: Sequence[Sequence[dict]], images) -> dict:
    """Mean IoU over all requested boxes, and the fraction of images with exactly the requested labels."""
    ious, right = [], 0
    for layout, image in zip(layouts, images):
        box_ious, ok = match_layout(layout, detect_shapes(image))
        ious += box_ious
        right += ok
    return {"mean_iou": float(np.mean(ious)), "label_accuracy": right / len(layouts)}


def score_superres(originals, low_res, outputs) -> dict:
    """PSNR of the outputs and of bicubic upsampling against the originals; shapes read right in the output."""
    ours, bicubic, right = [], [], 0
    for original, small, output in zip(originals, low_res, outputs):
        up = small.resize(original.size, PIL.Image.Resampling.BICUBIC)
        ours.append(psnr(output, original))
        bicubic.append(psnr(up, original))
        expected = [d["label"] for d in detect_shapes(original)]
        right += labels_match(expected, [d["label"] for d in detect_shapes(output)])
    return {
        "psnr": float(np.mean(ours)),
        "bicubic_psnr": float(np.mean(bicubic)),
        "psnr_gain_over_bicubic": float(np.mean(ours) - np.mean(bicubic)),
        "shape_accuracy": right / len(outputs),
    }


@dataclass(frozen=True)
class GenerationTask:
    """What one generation task reads from a held-out row, the ``__call__`` argument it feeds, and its bars."""

    column: str  # the held-out row's key that carries y
    argument: str  # the pipeline argument it feeds (a model takes the task when it accepts this argument)
    score: Callable[[list[dict], list], dict]
    thresholds: dict[str, float]
    guided: bool = True  # the guidance scale applies (cross-attention conditions)
    # a semantic-map model without a layout planner takes the boxes drawn as its index map
    drawn_as_map: bool = False
    # metrics (higher is better) without a published bar that ``--fail-under`` may still name
    other_barred: tuple[str, ...] = ()
    # also scored on other data (photos, other kernels: ldm_hub.evaluation_superres) with ``data=``
    other_data: bool = False


# The tasks scored by generation (the names are the conditioning modes they exercise); ``autoencoder`` scores
# reconstructions.
GENERATION_TASKS = {
    "text": GenerationTask(
        "caption", "prompt", lambda rows, out: score_text([r["caption"] for r in rows], out), {"accuracy": 0.80}
    ),
    "layout": GenerationTask(
        "layout", "layout", lambda rows, out: score_layout([r["layout"] for r in rows], out),
        {"mean_iou": 0.85, "label_accuracy": 0.90}, drawn_as_map=True,
    ),
    "superres": GenerationTask(
        "low_res", "image",
        lambda rows, out: score_superres([r["image"] for r in rows], [r["low_res"] for r in rows], out),
        {"psnr_gain_over_bicubic": 3.0, "shape_accuracy": 0.95}, guided=False, other_barred=("psnr",),
        other_data=True,
    ),
}  # fmt: skip
TASKS = (*GENERATION_TASKS, "autoencoder")
THRESHOLDS = {
    **{name: task.thresholds for name, task in GENERATION_TASKS.items()},
    "autoencoder": AUTOENCODER_THRESHOLDS,
}


# The metrics of each task where higher is better: those a bar (``--fail-under METRIC=VALUE``) may name.
BARRED_METRICS = {
    **{name: (*task.thresholds, *task.other_barred) for name, task in GENERATION_TASKS.items()},
    "autoencoder": tuple(AUTOENCODER_THRESHOLDS),
}


def check_bars(task: str, bars: dict) -> dict[str, float]:
    """Bars ``{metric: value}`` for ``task``, checked before anything runs: known metrics, finite numbers."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    checked = {}
    for name, bar in bars.items():
        if name not in BARRED_METRICS[task]:
            raise ValueError(f"task {task!r} has no metric {name!r} to bar; choose one of {BARRED_METRICS[task]}")
        if isinstance(bar, bool) or not isinstance(bar, (int, float)) or not math.isfinite(bar):
            raise ValueError(f"the bar of {name!r} must be a finite number, got {bar!r}")
        checked[name] = float(bar)
    return checked


def check_thresholds(task: str, metrics: dict, bars: dict | None = None) -> dict:
    """``{metric: {"value", "threshold", "passed"}}`` for ``bars`` (default: the published bars of ``task``)."""
    bars = THRESHOLDS[task] if bars is None else bars
    return {
        name: {"value": metrics[name], "threshold": bar, "passed": bool(metrics[name] >= bar)}
        for name, bar in bars.items()
    }


# ---------------------------------------------------------------------------------------------- running a model
def _to_pil(array: np.ndarray) -> PIL.Image.Image:
    return PIL.Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8))


def load_autoencoder(model: str):
    """The autoencoder of a pipeline folder (its ``vae``) or an autoencoder model folder."""
    from .loading import read_json

    folder = Path(model)
    if (folder / "model_index.json").is_file() or not folder.exists():
        from .pipelines.ldm_pipeline import LDMPipeline

        return LDMPipeline.from_pretrained(model).vae
    import ldm_hub

    class_name = read_json(folder / "config.json").get("_class_name")
    cls = getattr(ldm_hub, str(class_name), None)
    if cls is None or class_name not in ("AutoencoderKL", "VQModel"):
        raise ValueError(f"{folder} holds a {class_name!r}, not an ldm_hub AutoencoderKL or VQModel")
    return cls.from_pretrained(folder)


def reconstruct(vae, images: Sequence[PIL.Image.Image]):
    """D(E(x)) for PIL images (the KL posterior's mode; VQ quantised), as PIL images."""
    import torch

    x = torch.from_numpy(np.stack([np.asarray(im, dtype=np.float32) / 127.5 - 1.0 for im in images]))
    x = x.permute(0, 3, 1, 2).to(vae.device, vae.dtype)  # (B, 3, H, W)
    with torch.no_grad():
        if hasattr(vae, "quantize"):
            out = vae.decode(vae.encode(x).latents).sample
        else:
            out = vae.decode(vae.encode(x).latent_dist.mode()).sample
    out = ((out.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)
    return [_to_pil(a) for a in out]


def evaluate(
    model: str,
    task: str,
    num_samples: int = 200,
    seed: int = 0,
    steps: int = 50,
    batch_size: int = 16,
    guidance_scale: float = 1.0,
    data_seed: int = HELD_OUT_SEED,
    device: str = "cpu",
    save_images: str | None = None,
    progress: bool = True,
    fail_under: dict[str, float] | None = None,
    data: str = "shapes",
    degradation: str | None = None,
) -> dict:
    """Generate ``num_samples`` images for held-out shapes scenes and score them (see the module docstring).

    ``data`` other than ``"shapes"`` (photos, an image folder, ``"shapes-variant"``) or a ``degradation`` scores
    super-resolution by :func:`ldm_hub.evaluation_superres.evaluate_superres` (and the autoencoder's
    reconstructions of photos by ``evaluate_autoencoder_photos``).

    Image ``i`` uses ``torch.Generator().manual_seed(seed + i)``, so results do not depend on ``batch_size``.
    Returns a JSON-ready dict: the settings, the metrics, and ``thresholds`` with a ``passed`` flag per bar;
    with ``fail_under`` (``{metric: bar}``, checked by :func:`check_bars` before anything loads) also
    ``fail_under``, the same for those bars.
    """
    import torch

    from .conditioning.layout_planner import layout_to_segmentation
    from .data.shapes import LABELS, make_shapes_dataset

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    if num_samples < 1 or batch_size < 1 or steps < 1:
        raise ValueError("num_samples, batch_size and steps must be >= 1")
    fail_under = check_bars(task, fail_under or {})
    if data != "shapes" or degradation is not None:
        return _evaluate_other_data(model, task, data, degradation, num_samples, seed, steps, batch_size, device,
                                    save_images, progress, fail_under)  # fmt: skip
    held_out = make_shapes_dataset(num_samples, seed=data_seed)
    rows = [held_out[i] for i in range(num_samples)]
    start = time.perf_counter()
    outputs: list[PIL.Image.Image] = []
    batches = range(0, num_samples, batch_size)
    generation = GENERATION_TASKS.get(task)
    if generation is None:  # the autoencoder: reconstructions
        vae = load_autoencoder(model).to(device).eval()
        for b in batches:
            outputs += reconstruct(vae, [r["image"] for r in rows[b : b + batch_size]])
        metrics = {"psnr": float(np.mean([psnr(o, r["image"]) for o, r in zip(outputs, rows)]))}
    else:
        from .pipelines.ldm_pipeline import LDMPipeline

        pipe = LDMPipeline.from_pretrained(model).to(device)
        pipe.set_progress_bar_config(disable=True)
        # A semantic-map model without a planner takes the boxes drawn as its index map.
        draw_boxes = generation.argument not in pipe.accepted_inputs and "segmentation" in pipe.accepted_inputs
        draw_boxes = draw_boxes and generation.drawn_as_map
        if generation.argument not in pipe.accepted_inputs and not draw_boxes:
            raise ValueError(
                f"{model} is a {pipe.conditioning!r} model; --task {task} needs a {task!r} model (one that takes "
                f"`{generation.argument}`; this one takes {list(pipe.accepted_inputs)})"
            )
        guidance = {"guidance_scale": guidance_scale} if pipe.guidance_supported else {}
        for b in batches:
            chunk = rows[b : b + batch_size]
            generators = [torch.Generator(device).manual_seed(seed + b + i) for i in range(len(chunk))]
            kwargs = dict(num_inference_steps=steps, generator=generators, output_type="np")
            if draw_boxes:
                kwargs["segmentation"] = [layout_to_segmentation(r["layout"], r["image"].size, LABELS) for r in chunk]
            else:
                kwargs.update({generation.argument: [r[generation.column] for r in chunk]})
                kwargs.update(guidance if generation.guided else {})
            outputs += [_to_pil(a) for a in pipe(**kwargs).images]
            if progress:
                print(f"  {min(b + batch_size, num_samples)}/{num_samples} images", flush=True)
        metrics = generation.score(rows, outputs)
    seconds = time.perf_counter() - start

    if save_images:
        folder = Path(save_images)
        folder.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(outputs):
            image.save(folder / f"{i:04d}.png")
    settings = {"model": str(model), "task": task, "num_samples": num_samples, "seed": seed, "data_seed": data_seed}
    if generation is not None:
        settings["steps"] = steps
        if generation.guided:
            settings["guidance_scale"] = guidance_scale
    result = {
        **settings,
        "metrics": metrics,
        "thresholds": check_thresholds(task, metrics),
        "seconds": round(seconds, 2),
    }
    result["passed"] = all(t["passed"] for t in result["thresholds"].values())
    if fail_under:
        result["fail_under"] = check_thresholds(task, metrics, fail_under)
    return result


def _evaluate_other_data(model, task, data, degradation, num_samples, seed, steps, batch_size, device, save_images,
                         progress, fail_under) -> dict:  # fmt: skip
    from . import evaluation_superres

    takes_data = [name for name, t in GENERATION_TASKS.items() if t.other_data]
    if task == "autoencoder" and degradation is None and data not in evaluation_superres.SHAPES_DATA:
        return evaluation_superres.evaluate_autoencoder_photos(model, data, num_samples, device)
    if task not in takes_data:
        raise ValueError(f"data {data!r} / degradation {degradation!r}: other data is scored for {takes_data} "
                         f"(and photos for the autoencoder), not for {task!r}")  # fmt: skip
    return evaluation_superres.evaluate_superres(
        model, data, degradation, num_samples=num_samples, seed=seed, steps=steps, batch_size=batch_size,
        device=device, save_images=save_images, progress=progress, fail_under=fail_under,
    )  # fmt: skip


def write_json(result: dict, path: str) -> None:
    """Write an evaluation result atomically."""
    from .loading import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(result, indent=2) + "\n").encode())
