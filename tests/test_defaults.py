"""The default models shipped inside the package (issue 4 item 3): where they are, what they serve, and
`ldm-hub generate` without --model. Their quality is checked in test_evaluate.py; the wheel in test_cli.py."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import torch

import ldm_hub
from ldm_hub import LDMPipeline, default_model_path
from ldm_hub.defaults import DEFAULT_MODELS_DIR

MAX_SHIPPED_BYTES = 30 * 2**20


def test_paths_and_errors():
    assert default_model_path("text") == default_model_path("layout") == default_model_path()
    assert default_model_path("superres") != default_model_path("text")
    assert (default_model_path("superres") / "model_index.json").is_file()
    with pytest.raises(ValueError, match="no default model for task 'class'"):
        default_model_path("class")
    assert "default_model_path" in ldm_hub.__all__


def test_shipped_weights_are_small_fp16_safetensors_with_their_training_record():
    files = [p for p in DEFAULT_MODELS_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= MAX_SHIPPED_BYTES
    weights = [p for p in files if p.suffix == ".safetensors"]
    assert weights and not [p for p in files if p.suffix in (".bin", ".ckpt", ".pt", ".pth")]
    from safetensors import safe_open

    for path in weights:
        with safe_open(str(path), "pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}, path
    for task in ("text", "superres"):
        info = json.loads((default_model_path(task) / "training_info.json").read_text())
        config = json.loads((default_model_path(task) / "training_config.json").read_text())
        assert info["steps"] == config["max_steps"] and info["ema"] is True
        assert config["dataset"].startswith("shapes")


def test_shipped_pipelines_load_in_fp32_and_serve_their_tasks():
    text = LDMPipeline.from_pretrained(default_model_path("text"))
    assert text.tasks == ("text", "layout", "semantic") and text.unet.dtype == torch.float32
    sr = LDMPipeline.from_pretrained(default_model_path("superres"))
    assert sr.conditioning == "superres" and sr.vae.dtype == torch.float32
    # one autoencoder shared by both (the same fp16 file)
    a = (default_model_path("text") / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert a == (default_model_path("superres") / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()


@pytest.mark.parametrize("task", ["text", "layout", "superres"])
def test_generate_without_model_uses_the_shipped_one(task, tmp_path, capsys):
    from ldm_hub.cli import main

    flags = {
        "text": ["--prompt", "a red circle and a blue square"],
        "layout": ["--layout", '[{"label": "green triangle", "box": [0.1, 0.1, 0.5, 0.5]}]'],
        "superres": ["--image", str(tmp_path / "low.png")],
    }[task]
    PIL.Image.new("RGB", (16, 16), (240, 238, 230)).save(tmp_path / "low.png")
    out = tmp_path / "out.png"
    assert main(["generate", *flags, "--steps", "2", "--output", str(out)]) == 0
    assert f"using the shipped default {task} model" in capsys.readouterr().out
    assert np.asarray(PIL.Image.open(out)).shape == (64, 64, 3)


def test_plain_diffusers_loads_the_shipped_planner_model():
    """The shipped folder is a normal pipeline folder: diffusers' own loader (trust_remote_code, its pipeline.py)
    builds the same LDMPipeline, LayoutPlanner included, and samples the same image."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(default_model_path("text")), trust_remote_code=True)
    assert type(pipe) is LDMPipeline and type(pipe.layout_planner).__name__ == "LayoutPlanner"
    ours = LDMPipeline.from_pretrained(default_model_path("text"))
    images = [
        p("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
        for p in (pipe, ours)
    ]
    np.testing.assert_array_equal(images[0], images[1])
