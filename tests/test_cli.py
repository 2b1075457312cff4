"""`ldm-hub generate` through the installed console script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers_repos import superres_pipeline, text2im_pipeline

from ldm_hub import LDMPipeline


def ldm_hub_cmd() -> list[str]:
    exe = shutil.which("ldm-hub", path=os.path.dirname(sys.executable))
    assert exe, "the ldm-hub console script is not installed next to this Python"
    return [exe]


def run(*args, check=True):
    proc = subprocess.run(ldm_hub_cmd() + list(map(str, args)), capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def text_repo(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "text"
    text2im_pipeline().save_pretrained(path)
    return path


def test_help_lists_options():
    out = run("generate", "--help").stdout
    for flag in (
        "--model",
        "--prompt",
        "--negative-prompt",
        "--image",
        "--steps",
        "--guidance-scale",
        "--scheduler",
        "--seed",
        "--num-images",
        "--height",
        "--width",
        "--device",
        "--dtype",
        "--output",
    ):
        assert flag in out


def test_generate_text_matches_python_api(text_repo, tmp_path):
    out = tmp_path / "img.png"
    proc = run(
        "generate",
        "--model",
        text_repo,
        "--prompt",
        "a red circle",
        "--steps",
        "3",
        "--guidance-scale",
        "2",
        "--seed",
        "7",
        "--output",
        out,
    )
    assert f"wrote {out}" in proc.stdout
    pipe = LDMPipeline.from_pretrained(text_repo)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(
        "a red circle", num_inference_steps=3, guidance_scale=2.0, generator=torch.Generator().manual_seed(7)
    ).images[0]
    assert np.array_equal(np.asarray(PIL.Image.open(out)), np.asarray(ref))


def test_generate_many_into_folder_with_scheduler(text_repo, tmp_path):
    proc = run(
        "generate",
        "--model",
        text_repo,
        "--prompt",
        "x",
        "--negative-prompt",
        "y",
        "--steps",
        "2",
        "--guidance-scale",
        "3",
        "--num-images",
        "2",
        "--scheduler",
        "dpm++",
        "--height",
        "64",
        "--width",
        "128",
        "--output",
        tmp_path / "outs",
    )
    files = sorted((tmp_path / "outs").glob("*.png"))
    assert len(files) == 2 and proc.stdout.count("wrote") == 2
    assert PIL.Image.open(files[0]).size == (128, 64)


def test_generate_superres(tmp_path):
    repo = tmp_path / "sr"
    superres_pipeline().save_pretrained(repo)
    low = tmp_path / "low.png"
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(low)
    run("generate", "--model", repo, "--image", low, "--steps", "2", "--output", tmp_path / "up.png")
    assert PIL.Image.open(tmp_path / "up.png").size == (64, 64)

    gray = tmp_path / "gray.png"
    PIL.Image.open(low).convert("L").save(gray)
    proc = run("generate", "--model", repo, "--image", gray, "--output", tmp_path / "x.png", check=False)
    assert proc.returncode == 2 and "mode 'L'" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_errors_are_clear(text_repo, tmp_path):
    proc = run("generate", "--model", text_repo, "--prompt", "x", "--scheduler", "euler", check=False)
    assert proc.returncode == 2 and "invalid choice: 'euler'" in proc.stderr
    proc = run("generate", "--model", tmp_path / "nope", "--prompt", "x", check=False)
    assert proc.returncode == 2 and "model folder not found" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("generate", "--model", text_repo, "--prompt", "x", "--height", "60", check=False)
    assert proc.returncode == 2 and "`height`=60" in proc.stderr
    proc = run("generate", "--model", text_repo, "--prompt", "x", "--guidance-scale", "nan", check=False)
    assert proc.returncode == 2 and "guidance_scale" in proc.stderr
    proc = run("generate", "--model", text_repo, "--prompt", "x", "--image", tmp_path / "missing.png", check=False)
    assert proc.returncode == 2 and "missing.png" in proc.stderr


@pytest.mark.slow
@pytest.mark.ci  # issue 4: the default models really ship in the wheel
def test_wheel_installs_and_generates_with_the_shipped_models(tmp_path):
    """A real (non-editable) wheel in a fresh venv: imports, `ldm-hub --help`, and `ldm-hub generate` with no
    --model for text, layout and super-resolution — the images equal this tree's pipeline's for the same seed."""
    import hashlib

    from utils import install_wheel

    from ldm_hub import default_model_path

    root = Path(__file__).resolve().parents[1]
    venv = install_wheel(root, tmp_path)
    py, cli = venv / "bin" / "python", venv / "bin" / "ldm-hub"
    code = (
        "import ldm_hub, ldm_hub.models, ldm_hub.schedulers; "
        "from ldm_hub import LDMPipeline, LDMUNet, AutoencoderKL, VQModel, LDMBertModel, DDIMScheduler, "
        "PLMSScheduler, DDPMScheduler, DPMSolverMultistepScheduler, LayoutPlanner; print(ldm_hub.__file__); "
        "print(ldm_hub.default_model_path('text')); print(ldm_hub.default_model_path('superres'))"
    )
    where, text_dir, sr_dir = subprocess.check_output([py, "-c", code], text=True, cwd=tmp_path).split()
    assert where.startswith(str(venv)) and text_dir.startswith(str(venv)) and sr_dir.startswith(str(venv)), where
    for task, installed in (("text", text_dir), ("superres", sr_dir)):  # the same weight files as this tree's
        for ours in sorted(default_model_path(task).rglob("*.safetensors")):
            theirs = Path(installed) / ours.relative_to(default_model_path(task))
            assert hashlib.sha256(theirs.read_bytes()).digest() == hashlib.sha256(ours.read_bytes()).digest()
    assert "generate" in subprocess.check_output([cli, "--help"], text=True)

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    low_res = tmp_path / "low.png"
    PIL.Image.new("RGB", (16, 16), (240, 238, 230)).save(low_res)
    layout = '[{"label": "blue square", "box": [0.2, 0.2, 0.6, 0.6]}]'
    cases = [
        ("text", ["--prompt", "a red circle and a blue square"], {"prompt": "a red circle and a blue square"}),
        ("layout", ["--layout", layout], {"layout": [{"label": "blue square", "box": [0.2, 0.2, 0.6, 0.6]}]}),
        ("superres", ["--image", str(low_res)], {"image": PIL.Image.open(low_res)}),
    ]
    for task, flags, kwargs in cases:
        out = tmp_path / f"{task}.png"
        proc = subprocess.run(
            [cli, "generate", *flags, "--steps", "3", "--seed", "1", "--output", out],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        assert f"using the shipped default {task} model" in proc.stdout
        pipe = LDMPipeline.from_pretrained(default_model_path(task))
        pipe.set_progress_bar_config(disable=True)
        want = pipe(num_inference_steps=3, generator=torch.Generator().manual_seed(1), **kwargs).images[0]
        got = np.asarray(PIL.Image.open(out).convert("RGB"), dtype=int)
        assert got.shape == (64, 64, 3)
        assert np.abs(got - np.asarray(want, dtype=int)).max() <= 1
