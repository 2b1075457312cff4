"""``ldm-hub evaluate MODEL --task ...``: measure a model on held-out shapes scenes by their geometry."""

from __future__ import annotations


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
    ev.add_argument("--device", default="cpu", help="torch device (default cpu)")
    ev.add_argument("--save-images", metavar="DIR", help="also write every generated image here")
    ev.add_argument("--json", metavar="FILE", help="write the result as JSON")


def run(args) -> int:
    import json

    from ..evaluation import HELD_OUT_SEED, evaluate, write_json

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
    )
    print(json.dumps(result, indent=2))
    for name, check in result["thresholds"].items():
        verdict = "pass" if check["passed"] else "FAIL"
        print(f"{args.task} {name}: {check['value']:.4g} (bar {check['threshold']}) {verdict}")
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0
