"""Score a caption model on the prompt test sets of issue 16 (ldm_hub.prompt_evaluation): every prompt of the
hand-written and the template set, 4 seeds each, read back with the shapes detector.

    python benchmarks/evaluate_prompts.py [MODEL] --steps 50 --json benchmarks/results/prompts/prompts.json

MODEL defaults to the shipped text default. Exits 3 when a set scores under its bar (0.9 exactly as asked).
"""

from __future__ import annotations

import argparse
import json
import sys

from ldm_hub import default_model_path
from ldm_hub.evaluation import write_json
from ldm_hub.prompt_evaluation import SEEDS_PER_PROMPT, evaluate_prompts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="pipeline folder or Hub id (default: the shipped text model)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seeds SEED ... SEED+3 for every prompt (default 0)")
    parser.add_argument("--seeds-per-prompt", type=int, default=SEEDS_PER_PROMPT)
    parser.add_argument("--num-prompts", type=int, help="only the first N prompts of each set")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--save-images", metavar="DIR")
    parser.add_argument("--json", metavar="FILE", help="write the result here")
    args = parser.parse_args(argv)
    result = evaluate_prompts(
        args.model or str(default_model_path()),
        num_prompts=args.num_prompts,
        seed=args.seed,
        steps=args.steps,
        batch_size=args.batch_size,
        device=args.device,
        seeds_per_prompt=args.seeds_per_prompt,
        save_images=args.save_images,
    )
    result["command"] = "python benchmarks/evaluate_prompts.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.json:
        write_json(result, args.json)
    for name, check in result["thresholds"].items():
        print(f"{name}: {check['value']:.4f} (bar {check['threshold']}) {'pass' if check['passed'] else 'FAIL'}")
    print(json.dumps({k: v for k, v in result["metrics"].items()}))
    return 0 if result["passed"] else 3


if __name__ == "__main__":
    raise SystemExit(main())
