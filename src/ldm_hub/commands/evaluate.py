"""``ldm-hub evaluate MODEL --task ...``: measure a model on held-out shapes scenes by their geometry."""

from __future__ import annotations

from ._common import CommandError, check_device, check_number, check_output_path, name_flags

MISSED_BAR = 3  # the exit status of a run that scored under a bar (2: a bad input, 1: the environment)


def add_parser(sub) -> None:
    ev = sub.add_parser(
        "evaluate",
        help="score a model on held-out shapes scenes (colour segmentation, "
        "components, fill ratio, IoU, PSNR; no learned metric)",
    )
    ev.add_argument("model", help="pipeline folder or Hub id (an autoencoder folder for --task autoencoder)")
    ev.add_argument("--task", required=True, choices=("text", "layout", "superres", "autoencoder"))
    ev.add_argument("--num-samples", type=int, default=200, help="held-out scenes to generate (default 200)")
    ev.add_argument("--seed", type=int, default=0, help="image i uses torch seed SEED + i (default 0)")
    ev.add_argument("--steps", type=int, default=50, help="sampling steps (default 50)")
    ev.add_argument("--guidance-scale", type=float, default=1.0, help="classifier-free guidance (text, layout)")
    ev.add_argument("--batch-size", type=int, default=16, help="images per pipeline call (default 16)")
    ev.add_argument(
        "--data-seed",
        type=int,
        help="seed of the held-out scenes (default: a stream the training commands do not use)",
    )
    ev.add_argument(
        "--data",
        default="shapes",
        help="what to score (super-resolution; photos also for the autoencoder): 'shapes' (default), "
        "'shapes-variant' (a generator variant never trained on), 'photos:test' / 'photos:validation' (the photo "
        "manifest, ldm_hub.data.photos) or an image folder; photos follow the 128² → 32² tiled protocol",
    )
    ev.add_argument(
        "--degradation",
        metavar="KERNEL[,KERNEL...]",
        help="how the low-res input is made: area, bicubic, bilinear, nearest, lanczos, blur+area, or 'kernels' "
        "for all six (default: bicubic for shapes, all six for shapes-variant, area for photos)",
    )
    ev.add_argument("--device", default="cpu", help="torch device (default cpu)")
    ev.add_argument("--save-images", metavar="DIR", help="also write every generated image here")
    ev.add_argument("--json", metavar="FILE", help="write the result as JSON")
    ev.add_argument(
        "--fail-under",
        action="append",
        default=[],
        metavar="METRIC=VALUE",
        help=f"exit {MISSED_BAR} when METRIC scores under VALUE (repeatable), e.g. --fail-under mean_iou=0.85",
    )
    ev.add_argument(
        "--fail-under-bars",
        action="store_true",
        help=f"exit {MISSED_BAR} when the task's published bars (the 'thresholds' of the result) are missed",
    )


def parse_bars(task: str, specs: list[str]) -> dict[str, float]:
    """``--fail-under mean_iou=0.85 --fail-under label_accuracy=0.9`` → ``{"mean_iou": 0.85, ...}``, checked."""
    from ..evaluation import check_bars

    bars = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        try:
            if not sep:
                raise ValueError
            bars[name.strip()] = float(value)
        except ValueError:
            raise CommandError(f"--fail-under {spec!r}: expected METRIC=VALUE, e.g. mean_iou=0.85") from None
    try:
        return check_bars(task, bars)
    except ValueError as e:
        raise CommandError(f"--fail-under: {e}") from None


def check_arguments(args) -> dict[str, float]:
    """Before the model loads: the numbers, the device, the paths to write, the bars."""
    check_number("--num-samples", args.num_samples, minimum=1, integer=True)
    check_number("--steps", args.steps, minimum=1, integer=True)
    check_number("--batch-size", args.batch_size, minimum=1, integer=True)
    check_number("--guidance-scale", args.guidance_scale, minimum=0)
    check_device("--device", args.device)
    check_output_path("--save-images", args.save_images, folder=True)
    check_output_path("--json", args.json)
    return parse_bars(args.task, args.fail_under)


def run(args) -> int:
    import json

    from ..evaluation import HELD_OUT_SEED, evaluate, write_json

    bars = check_arguments(args)
    try:
        result = evaluate(
            args.model,
            args.task,
            num_samples=args.num_samples,
            seed=args.seed,
            steps=args.steps,
            batch_size=args.batch_size,
            guidance_scale=args.guidance_scale,
            data_seed=HELD_OUT_SEED if args.data_seed is None else args.data_seed,
            device=args.device,
            save_images=args.save_images,
            fail_under=bars,
            data=args.data,
            degradation=args.degradation,
        )
    except (ValueError, TypeError, FileNotFoundError) as e:
        flags = {"num_inference_steps": "--steps", "guidance_scale": "--guidance-scale"}
        raise CommandError(name_flags(str(e), flags)) from e
    print(json.dumps({k: v for k, v in result.items() if k != "metrics"} | {"metrics": _brief(result["metrics"])},
                     indent=2))  # fmt: skip
    for name, check in result["thresholds"].items():
        verdict = "pass" if check["passed"] else "FAIL"
        print(f"{args.task} {name}: {check['value']:.4g} (bar {check['threshold']}) {verdict}")
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    missed = [
        f"{name} {check['value']:.4g} < {check['threshold']:g} (--fail-under)"
        for name, check in result.get("fail_under", {}).items() if not check["passed"]
    ]  # fmt: skip
    if args.fail_under_bars:
        missed += [
            f"{name} {check['value']:.4g} < {check['threshold']:g} (the published bar)"
            for name, check in result["thresholds"].items() if not check["passed"]
        ]  # fmt: skip
    if missed:
        raise CommandError(f"{args.model} missed {len(missed)} bar(s): {'; '.join(missed)}", MISSED_BAR)
    return 0


def _brief(metrics: dict) -> dict:
    """The metrics without the per-photo lists (those go to --json)."""
    return {k: _brief(v) if isinstance(v, dict) else v for k, v in metrics.items() if k != "per_photo"}
