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
    for flag in ("--model", "--prompt", "--negative-prompt", "--image", "--steps", "--guidance-scale",
                 "--scheduler", "--seed", "--num-images", "--height", "--width", "--device", "--dtype", "--output"):
        assert flag in out


def test_generate_text_matches_python_api(text_repo, tmp_path):
    out = tmp_path / "img.png"
    proc = run("generate", "--model", text_repo, "--prompt", "a red circle", "--steps", "3",
               "--guidance-scale", "2", "--seed", "7", "--output", out)
    assert f"wrote {out}" in proc.stdout
    pipe = LDMPipeline.from_pretrained(text_repo)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe("a red circle", num_inference_steps=3, guidance_scale=2.0,
               generator=torch.Generator().manual_seed(7)).images[0]
    assert np.array_equal(np.asarray(PIL.Image.open(out)), np.asarray(ref))


def test_generate_many_into_folder_with_scheduler(text_repo, tmp_path):
    proc = run("generate", "--model", text_repo, "--prompt", "x", "--negative-prompt", "y", "--steps", "2",
               "--guidance-scale", "3", "--num-images", "2", "--scheduler", "dpm++", "--height", "64",
               "--width", "128", "--output", tmp_path / "outs")
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


def test_wheel_installs_and_runs(tmp_path):
    """Build a real (non-editable) wheel, install it in a fresh venv, run `ldm-hub --help` and an import."""
    root = Path(__file__).resolve().parents[1]
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist,
                    root], check=True, timeout=300)
    (wheel,) = dist.glob("ldm_hub-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
    py = venv / "bin" / "python"
    # Dependencies come from this environment's site-packages (a plain path entry: its .pth files, including
    # the editable ldm_hub finder, are not processed); ldm_hub itself only from the wheel.
    import sysconfig

    purelib = Path(subprocess.check_output([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                           text=True).strip())
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], check=True, timeout=300)
    code = ("import ldm_hub, ldm_hub.models, ldm_hub.schedulers; "
            "from ldm_hub import LDMPipeline, LDMUNet, AutoencoderKL, VQModel, LDMBertModel, DDIMScheduler, "
            "PLMSScheduler, DDPMScheduler, DPMSolverMultistepScheduler; print(ldm_hub.__file__)")
    where = subprocess.check_output([py, "-c", code], text=True, cwd=tmp_path).strip()
    assert where.startswith(str(venv)), where
    help_text = subprocess.check_output([venv / "bin" / "ldm-hub", "--help"], text=True)
    assert "generate" in help_text
