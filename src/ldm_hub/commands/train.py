"""``ldm-hub train autoencoder|ldm``: train the first stage or a latent diffusion model (accelerate).

Every setting is a flag and a key of an optional ``--config`` JSON/YAML file (flags win). The same command
runs on one CPU or one GPU as is, and on several processes through accelerate:

    accelerate launch --num_processes 8 -m ldm_hub.cli train ldm ...                 # 8 GPUs (NCCL)
    accelerate launch --multi_gpu --num_processes 2 -m ldm_hub.cli train ldm ...     # 2 CPU processes (gloo)

(accelerate's own ``--cpu`` flag starts a single process unless MPI is configured; on a machine without GPUs
ldm_hub turns a multi-process launch into CPU processes itself.)
"""

from __future__ import annotations

TRAINERS = {
    "autoencoder": (
        "AutoencoderTrainingConfig",
        "train_autoencoder",
        "the autoencoder E, D: L1 + perceptual + PatchGAN losses, KL or VQ regulariser",
    ),
    "ldm": (
        "LDMTrainingConfig",
        "train_ldm",
        ("a latent diffusion model on a frozen autoencoder: text, layout, semantic, superres or unconditional"),
    ),
}


def add_parser(sub) -> None:
    import argparse

    from ..training import config as training_config

    train = sub.add_parser(
        "train",
        help="train an autoencoder or a latent diffusion model (accelerate)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = train.add_subparsers(dest="what", metavar="{autoencoder,ldm}")
    kinds.required = True
    for name, (config_class, _, help_text) in TRAINERS.items():
        parser = kinds.add_parser(name, help=help_text, description=help_text)
        training_config.add_config_arguments(parser, getattr(training_config, config_class))
        parser.add_argument("--print-config", action="store_true", help="print the resolved settings as JSON and exit")
        parser.add_argument(
            "--overwrite", action="store_true",
            help="train into an --output-dir that holds something other than this trainer's run (or a previous "
            "run, without --resume)",
        )  # fmt: skip


def run(args) -> int:
    import json

    from .. import training
    from ..training import config as training_config
    from ._common import training_config_from_args

    config_class, function, _ = TRAINERS[args.what]
    config = training_config_from_args(getattr(training_config, config_class), args)  # errors name the flag
    if args.print_config:
        print(json.dumps(training_config.config_to_dict(config), indent=2))
        return 0
    import sys

    from ..training.common import TrainingDivergedError, check_output_dir

    check_output_dir(config.output_dir, kind=args.what, resume=config.resume, overwrite=args.overwrite)
    trainers = {"train_autoencoder": training.train_autoencoder, "train_ldm": training.train_ldm}
    try:
        trainers[function](config)
    except TrainingDivergedError as e:  # the run's own fault, not the input's: exit 1, nothing saved
        print(f"ldm-hub train: error: {e}", file=sys.stderr)
        return 1
    return 0
