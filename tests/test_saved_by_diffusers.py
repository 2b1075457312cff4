"""Nothing breaks for users (issue 12, item 8): folders diffusers wrote with ldm_hub components keep loading.

``diffusers.LDMTextToImagePipeline(...).save_pretrained`` records a component of a library it does not know as
``[its __module__, class name]`` (``"unet": ["ldm_hub.models.unet", "LDMUNet"]``), so every public class's module
path of today is part of the saved format. tests/fixtures/diffusers-saved-ldm-hub/ is such a folder, committed
(tests/fixtures/make_diffusers_saved.py wrote it); it must load through ldm_hub and through diffusers itself.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import ldm_hub

FOLDER = Path(__file__).resolve().parent / "fixtures" / "diffusers-saved-ldm-hub"
PROMPT = "a red circle and a blue square"
PIXEL_TOL = 1e-4  # the same sampler and weights through both pipelines; reached ~1e-6

# Every class exported by ldm_hub, ldm_hub.models, ldm_hub.conditioning, ldm_hub.schedulers and ldm_hub.pipelines,
# at the module its __module__ named on main at e6c0a27 (before issue 12's refactor). Written out literally: a
# class may move, but its old path has to keep importing it (re-export), or saved folders stop loading.
PUBLIC_CLASS_PATHS = [
    ("ldm_hub.conditioning.class_label", "ClassEmbedder"),
    ("ldm_hub.conditioning.layout", "LayoutTokenizer"),
    ("ldm_hub.conditioning.layout_planner", "LayoutPlanner"),
    ("ldm_hub.conditioning.semantic_map", "SemanticMapEncoder"),
    ("ldm_hub.conditioning.text", "LDMBertModel"),
    ("ldm_hub.models.autoencoder_kl", "AutoencoderKL"),
    ("ldm_hub.models.autoencoder_vq", "VQModel"),
    ("ldm_hub.models.unet", "LDMUNet"),
    ("ldm_hub.pipelines.ldm_pipeline", "LDMPipeline"),
    ("ldm_hub.schedulers.ddim", "DDIMScheduler"),
    ("ldm_hub.schedulers.ddpm", "DDPMScheduler"),
    ("ldm_hub.schedulers.dpm_solver", "DPMSolverMultistepScheduler"),
    ("ldm_hub.schedulers.plms", "PLMSScheduler"),
]
# The classes the fixture's model_index.json names, by component.
SAVED_AS = {
    "vqvae": ["ldm_hub.models.autoencoder_kl", "AutoencoderKL"],
    "bert": ["ldm_hub.conditioning.text", "LDMBertModel"],
    "tokenizer": ["transformers", "BertTokenizer"],
    "unet": ["ldm_hub.models.unet", "LDMUNet"],
    "scheduler": ["ldm_hub.schedulers.ddim", "DDIMScheduler"],
}


@pytest.mark.parametrize(("module", "name"), PUBLIC_CLASS_PATHS)
def test_public_class_module_paths_stay_importable(module, name):
    cls = getattr(importlib.import_module(module), name)
    assert cls is getattr(ldm_hub, name)


def test_fixture_is_what_diffusers_writes():
    index = json.loads((FOLDER / "model_index.json").read_text())
    assert index["_class_name"] == "LDMTextToImagePipeline"
    assert {k: v for k, v in index.items() if not k.startswith("_")} == SAVED_AS
    size = sum(p.stat().st_size for p in FOLDER.rglob("*") if p.is_file())
    assert size < 1024 * 1024, f"the fixture grew to {size} bytes"


def _generator():
    return torch.Generator().manual_seed(0)


def test_loads_with_ldm_hub_and_with_diffusers():
    import diffusers

    ours = ldm_hub.LDMPipeline.from_pretrained(FOLDER)
    assert ours.conditioning == "text"
    assert type(ours.vae) is ldm_hub.AutoencoderKL and type(ours.unet) is ldm_hub.LDMUNet
    assert type(ours.cond_encoder) is ldm_hub.LDMBertModel and type(ours.scheduler) is ldm_hub.DDIMScheduler

    theirs = diffusers.DiffusionPipeline.from_pretrained(FOLDER)
    assert type(theirs) is diffusers.LDMTextToImagePipeline
    assert type(theirs.vqvae) is ldm_hub.AutoencoderKL and type(theirs.unet) is ldm_hub.LDMUNet
    assert type(theirs.bert) is ldm_hub.LDMBertModel and type(theirs.scheduler) is ldm_hub.DDIMScheduler

    images = []
    for pipe, prompt in ((ours, PROMPT), (theirs, [PROMPT])):
        pipe.set_progress_bar_config(disable=True)
        out = pipe(prompt, num_inference_steps=2, guidance_scale=2.0, generator=_generator(), output_type="np")
        assert out.images.shape == (1, 32, 32, 3) and np.isfinite(out.images).all()
        images.append(out.images)
    diff = float(np.abs(images[0] - images[1]).max())
    print(f"ldm_hub vs diffusers on the diffusers-saved folder: max pixel diff {diff:.2e}")
    assert diff <= PIXEL_TOL
