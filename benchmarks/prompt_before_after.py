"""Same images before and after a caption-parser change: plans and samples the shipped text default's images for
captions the old parser accepted, so two checkouts can be compared.

    python benchmarks/prompt_before_after.py --output before.npz            # on the old code
    python benchmarks/prompt_before_after.py --output after.npz --compare before.npz --json result.json

The captions: 40 held-out shapes captions (the training captions' form) and every prompt of the two test sets
(ldm_hub.prompt_evaluation). Each is planned and sampled with seed 0 (10 DDIM steps: enough to show any change of
plan or noise). A caption the code refuses is recorded as refused.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from ldm_hub import LDMPipeline, default_model_path
from ldm_hub.data.shapes import make_shapes_dataset
from ldm_hub.evaluation import HELD_OUT_SEED
from ldm_hub.prompt_evaluation import prompt_sets


def captions() -> list[str]:
    held_out = make_shapes_dataset(40, seed=HELD_OUT_SEED)["caption"]
    return list(held_out) + [e["prompt"] for entries in prompt_sets().values() for e in entries]


def run(steps: int) -> dict:
    pipe = LDMPipeline.from_pretrained(default_model_path())
    pipe.set_progress_bar_config(disable=True)
    out = {}
    for caption in captions():
        try:
            layout = pipe.layout_planner.plan([caption], generator=torch.Generator().manual_seed(0))[0]
        except ValueError:
            out[caption] = None
            continue
        image = pipe(caption, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="np")
        out[caption] = (json.dumps(layout), image.images[0])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True)
    parser.add_argument("--compare", help="an earlier --output to compare with")
    parser.add_argument("--json", help="write the comparison here")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    result = run(args.steps)
    keys = list(result)
    np.savez_compressed(
        args.output,
        captions=np.array(keys),
        layouts=np.array([result[k][0] if result[k] else "" for k in keys]),
        images=np.stack([result[k][1] if result[k] else np.zeros((64, 64, 3), np.float32) for k in keys]),
    )
    if not args.compare:
        return 0
    old = np.load(args.compare)
    before = {
        str(c): (str(lay), img) if lay else None for c, lay, img in zip(old["captions"], old["layouts"], old["images"])
    }
    rows = {"same_image": [], "changed": [], "refused_before": [], "refused_now": []}
    for caption in keys:
        was, now = before.get(caption), result[caption]
        if was is None:
            rows["refused_before" if now is not None else "refused_now"].append(caption)
        elif now is None:
            rows["refused_now"].append(caption)
        elif was[0] == now[0] and np.array_equal(was[1], now[1]):
            rows["same_image"].append(caption)
        else:
            rows["changed"].append({"caption": caption, "before": json.loads(was[0]), "now": json.loads(now[0])})
    summary = {name: len(items) for name, items in rows.items()}
    print(json.dumps(summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"steps": args.steps, "summary": summary, **rows}, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
