"""``ldm-hub generate``: sample images from a model folder or Hub repo, in any conditioning mode.

The condition flags follow the model's mode (``LDMPipeline.conditioning``): ``--prompt`` (text), ``--layout``
(layout-to-image), ``--class-label`` (class-conditional), ``--segmentation`` (semantic synthesis),
``--image`` (super-resolution) or ``--image`` + ``--mask`` (inpainting); none for an unconditional model.
``--init-image IMG --strength S`` starts the others from an image (image-to-image).
Without ``--model`` the model shipped in the package is used (:func:`ldm_hub.default_model_path`): the
super-resolution one with ``--image``, else the text + layout one — so on a fresh install, with no download,

    ldm-hub generate --prompt "a red circle and a blue square" --output out.png
"""

from __future__ import annotations

import json
from pathlib import Path

from ..options import DTYPES, SCHEDULERS, scheduler_class
from ._common import (
    CommandError,
    check_device,
    check_number,
    check_output_path,
    name_flags,
    write_file,
)


def add_parser(sub) -> None:
    gen = sub.add_parser("generate", help="sample images from a model folder or Hub repo")
    gen.add_argument(
        "--model",
        help="model folder or Hub repo id (default: the model shipped in the package for "
        "the task: super-resolution with --image, else text + layout)",
    )
    gen.add_argument("--prompt", help="text prompt (text-to-image models)")
    gen.add_argument("--negative-prompt", help="text used instead of '' for classifier-free guidance")
    gen.add_argument(
        "--image", help="low-resolution input image (super-resolution models), or the image to inpaint (with --mask)"
    )
    gen.add_argument("--mask", help="inpainting mask PNG, the size of --image: white = area to fill")
    gen.add_argument(
        "--init-image",
        help="image-to-image (SDEdit): start from this image, noised to --strength (text, layout, class, "
        "semantic and unconditional models; the output has its size)",
    )
    gen.add_argument(
        "--strength", type=float, help="image-to-image: how far --init-image is noised, in (0, 1] (default 0.8)"
    )
    gen.add_argument(
        "--layout",
        help="layout-to-image: a JSON file or inline JSON, "
        '[{"label": "red circle" or a category id, "box": [x0, y0, x1, y1]}, ...] with corners in '
        "[0, 1] and the origin top left (or a list of such layouts, one per image)",
    )
    gen.add_argument(
        "--class-label",
        action="append",
        metavar="ID[,ID...]",
        help="class-conditional models: class id(s); repeat the flag or give a comma list",
    )
    gen.add_argument("--segmentation", help="semantic synthesis: an index PNG (mode L or P, one class id per pixel)")
    gen.add_argument(
        "--tile-size",
        type=int,
        help="sample super-resolution / semantic outputs in overlapping tiles "
        "of this many pixels (bounded memory for large images)",
    )
    gen.add_argument("--tile-overlap", type=int, help="overlap of the tiles in pixels (default a quarter tile)")
    gen.add_argument("--steps", type=int, default=50, help="number of sampling steps (default 50)")
    gen.add_argument("--guidance-scale", type=float, default=1.0, help="classifier-free guidance scale (1 = off)")
    gen.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0 = deterministic)")
    gen.add_argument("--scheduler", choices=sorted(SCHEDULERS), help="sampler (default: the model's own)")
    gen.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    gen.add_argument("--num-images", type=int, default=1, help="images to generate (default 1)")
    gen.add_argument("--height", type=int, help="output height in pixels")
    gen.add_argument("--width", type=int, help="output width in pixels")
    gen.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default cpu)")
    gen.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="model dtype (default float32)")
    gen.add_argument(
        "--output", default="out.png", help="output PNG file, or a folder (one PNG per image); default out.png"
    )


def _output_paths(output: str, count: int) -> list[Path]:
    path = Path(output)
    if path.suffix.lower() == ".png" and count == 1:
        return [path]
    if path.suffix.lower() == ".png":
        return [path.with_name(f"{path.stem}-{i}.png") for i in range(count)]
    return [path / f"image-{i:03d}.png" for i in range(count)]


def _read_image(path: str, flag: str):
    import PIL.Image

    try:
        image = PIL.Image.open(path)
        image.load()
    except (OSError, PIL.UnidentifiedImageError) as e:
        raise ValueError(f"cannot read {flag} {path}: {e}") from None
    return image


def parse_layout(value: str):
    """``--layout``: inline JSON (starts with ``[`` or ``{``) or the path of a JSON file → a layout or layouts."""
    text = value.strip()
    source = "--layout"
    if not text.startswith(("[", "{")):
        path = Path(value)
        if not path.is_file():
            raise ValueError(f"--layout {value!r} is neither inline JSON nor an existing JSON file")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read --layout {value}: {e}") from None
        source = f"--layout {value}"
    try:
        layout = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{source} is not valid JSON: {e}") from None
    if isinstance(layout, dict):  # one object alone
        layout = [layout]
    if not isinstance(layout, list):
        raise ValueError(f'{source} must be a JSON list of objects {{"label": ..., "box": [x0, y0, x1, y1]}}')
    return layout


def parse_class_labels(values: list[str]) -> list[int]:
    """``--class-label 3 --class-label 7,9`` → [3, 7, 9]."""
    labels = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            try:
                labels.append(int(part))
            except ValueError:
                raise ValueError(f"--class-label {part!r} is not an integer class id") from None
    return labels


# The pipeline's arguments set by a flag of the same name (``tile_size`` ← ``--tile-size``), and those whose flag
# is named otherwise: a library error is reworded with the flags (:func:`~ldm_hub.commands._common.name_flags`).
SAME_NAMED = (
    "eta", "height", "width", "negative_prompt", "prompt", "image", "layout", "segmentation", "tile_size",
    "tile_overlap", "strength",
)  # fmt: skip
FLAGS = {
    **{name: "--" + name.replace("_", "-") for name in SAME_NAMED},
    "num_inference_steps": "--steps",
    "guidance_scale": "--guidance-scale",
    "num_images_per_prompt": "--num-images",
    "batch_size": "--num-images",
    "mask_image": "--mask",
    "layouts": "--layout",
    "class_labels": "--class-label",
    "generator": "--seed",
    "torch_dtype": "--dtype",
}


def check_arguments(args) -> dict:
    """Every check that needs no model, before one is loaded (each mistake would otherwise cost the loading
    time): the numbers, the device, the output path, the input files, the layout. Returns the condition
    arguments read from the flags (images, layout, class labels)."""
    from ..conditioning.inputs import as_layout_batch, check_layout

    check_number("--steps", args.steps, minimum=1, integer=True)
    check_number("--num-images", args.num_images, minimum=1, integer=True)
    check_number("--guidance-scale", args.guidance_scale, minimum=0, hint=" (guidance_scale >= 0; 1 = no guidance)")
    check_number("--eta", args.eta, minimum=0, hint=" (DDIM eta >= 0; 0 = deterministic)")
    for flag, value in (("--height", args.height), ("--width", args.width), ("--tile-size", args.tile_size)):
        check_number(flag, value, above=0, integer=True)
    check_number("--tile-overlap", args.tile_overlap, minimum=0, integer=True)
    if args.tile_overlap is not None and args.tile_size is None:
        raise CommandError("--tile-overlap needs --tile-size")
    if args.mask and not args.image:
        raise CommandError("--mask needs --image (the image to inpaint)")
    if args.strength is not None:
        if args.init_image is None:
            raise CommandError("--strength needs --init-image (image-to-image)")
        check_number("--strength", args.strength, above=0, hint=" (in (0, 1])")
        if args.strength > 1:
            raise CommandError(f"--strength {args.strength!r}: must be in (0, 1]")
    if args.init_image and args.image:
        raise CommandError(
            "--init-image and --image: --image is the condition of super-resolution and inpainting models, "
            "--init-image the start of image-to-image for the others; pass one"
        )
    check_device("--device", args.device)
    for path in _output_paths(args.output, args.num_images):
        check_output_path("--output", path)
    kwargs = {}
    for flag, name, path in (
        ("--image", "image", args.image), ("--mask", "mask_image", args.mask),
        ("--segmentation", "segmentation", args.segmentation), ("--init-image", "image", args.init_image),
    ):  # fmt: skip
        if path:
            kwargs[name] = _read_image(path, flag)  # names the flag and the path of a missing or unreadable file
    if args.layout is not None:
        layout = parse_layout(args.layout)
        try:
            for i, one in enumerate(as_layout_batch(layout)):
                check_layout(one, f"layout {i}, ")
        except ValueError as e:
            raise CommandError(f"--layout: {e}") from None
        kwargs["layout"] = layout
    if args.class_label:
        kwargs["class_labels"] = parse_class_labels(args.class_label)
    if args.tile_size is not None:
        kwargs["tile_size"] = args.tile_size
    if args.tile_overlap is not None:
        kwargs["tile_overlap"] = args.tile_overlap
    if args.strength is not None:
        kwargs["strength"] = args.strength
    return kwargs


def run(args) -> int:
    import io

    import torch

    import ldm_hub
    from ldm_hub import LDMPipeline

    kwargs = check_arguments(args)  # all of it before the model loads
    model = args.model
    if model is None:
        task = "superres" if args.image else "layout" if args.layout is not None else "text"
        model = ldm_hub.default_model_path(task)
        print(f"using the shipped default {task} model ({model})")
    try:
        pipe = LDMPipeline.from_pretrained(model)
        if args.scheduler:
            pipe.scheduler = scheduler_class(args.scheduler).from_config(pipe.scheduler.config)
        pipe.to(args.device, getattr(torch, DTYPES[args.dtype]))
        if args.prompt is not None:
            kwargs["prompt"] = args.prompt
        if args.negative_prompt is not None:
            kwargs["negative_prompt"] = args.negative_prompt
        if not pipe.accepted_inputs:  # no condition to repeat per prompt: an unconditional model's batch
            kwargs["batch_size"] = args.num_images
        else:
            kwargs["num_images_per_prompt"] = args.num_images
        generator = torch.Generator(device=args.device).manual_seed(args.seed)
        images = pipe(
            num_inference_steps=args.steps,
            guidance_scale=args.guidance_scale,
            eta=args.eta,
            height=args.height,
            width=args.width,
            generator=generator,
            **kwargs,
        ).images
    except (ValueError, TypeError) as e:  # the library's words, with the flags instead of its argument names
        flags = {**FLAGS, "image": "--init-image"} if args.init_image else FLAGS
        raise CommandError(name_flags(str(e), flags)) from e
    # each PNG appears whole or not at all (Ctrl-C, a full disk): written to a temporary sibling, then renamed
    for path, image in zip(_output_paths(args.output, len(images)), images):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        write_file("--output", path, buffer.getvalue())
        print(f"wrote {path}")
    return 0
