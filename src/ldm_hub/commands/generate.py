"""``ldm-hub generate``: sample images from a model folder or Hub repo."""

from __future__ import annotations

from pathlib import Path

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "plms": "PLMSScheduler",
    "ddpm": "DDPMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
}

DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
          "bfloat16": "bfloat16", "bf16": "bfloat16"}


def add_parser(sub) -> None:
    gen = sub.add_parser("generate", help="sample images from a model folder or Hub repo")
    gen.add_argument("--model", required=True, help="model folder or Hub repo id")
    gen.add_argument("--prompt", help="text prompt (text-to-image models)")
    gen.add_argument("--negative-prompt", help="text used instead of '' for classifier-free guidance")
    gen.add_argument("--image", help="low-resolution input image (super-resolution models)")
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
    gen.add_argument("--output", default="out.png",
                     help="output PNG file, or a folder (one PNG per image); default out.png")


def _output_paths(output: str, count: int) -> list[Path]:
    path = Path(output)
    if path.suffix.lower() == ".png" and count == 1:
        return [path]
    if path.suffix.lower() == ".png":
        return [path.with_name(f"{path.stem}-{i}.png") for i in range(count)]
    return [path / f"image-{i:03d}.png" for i in range(count)]


def run(args) -> int:
    import PIL.Image
    import torch

    import ldm_hub
    from ldm_hub import LDMPipeline

    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.num_images < 1:
        raise ValueError(f"--num-images must be >= 1, got {args.num_images}")
    pipe = LDMPipeline.from_pretrained(args.model)
    if args.scheduler:
        cls = getattr(ldm_hub, SCHEDULERS[args.scheduler])
        pipe.scheduler = cls.from_config(pipe.scheduler.config)
    pipe.to(args.device, getattr(torch, DTYPES[args.dtype]))
    kwargs = {}
    if args.image:
        try:
            kwargs["image"] = PIL.Image.open(args.image)
            kwargs["image"].load()
        except (OSError, PIL.UnidentifiedImageError) as e:
            raise ValueError(f"cannot read --image {args.image}: {e}") from None
    if args.prompt is not None:
        kwargs["prompt"] = args.prompt
    if args.negative_prompt is not None:
        kwargs["negative_prompt"] = args.negative_prompt
    if pipe.conditioning == "unconditional":
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
    for path, image in zip(_output_paths(args.output, len(images)), images):
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        print(f"wrote {path}")
    return 0
