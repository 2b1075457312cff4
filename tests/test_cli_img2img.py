"""``ldm-hub generate --init-image IMG --strength S``: image-to-image from the command line (issue 14)."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

import ldm_hub
from ldm_hub import LDMPipeline
from ldm_hub.cli import main


def cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def init_png(tmp_path_factory):
    pipe = LDMPipeline.from_pretrained(ldm_hub.default_model_path("text"))
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    path = tmp_path_factory.mktemp("init") / "init.png"
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
    return path


def test_generate_from_an_init_image_equals_the_pipeline(capsys, tmp_path, init_png):
    rc, out, _ = cli(capsys, "generate", "--prompt", "a red circle", "--init-image", init_png, "--strength", "0.5",
                     "--steps", "4", "--output", tmp_path / "out.png")  # fmt: skip
    assert rc == 0 and "wrote" in out
    pipe = LDMPipeline.from_pretrained(ldm_hub.default_model_path("text"))
    pipe.set_progress_bar_config(disable=True)
    expected = pipe("a red circle", image=PIL.Image.open(init_png).convert("RGB"), strength=0.5, num_inference_steps=4,
                    generator=torch.Generator().manual_seed(0)).images[0]  # fmt: skip
    assert np.array_equal(np.asarray(PIL.Image.open(tmp_path / "out.png")), np.asarray(expected))


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--prompt", "x", "--strength", "0.5"], "--strength needs --init-image"),
        (["--prompt", "x", "--init-image", "INIT", "--strength", "0"], r"--strength 0.0: must be > 0"),
        (["--prompt", "x", "--init-image", "INIT", "--strength", "1.5"], r"--strength 1.5: must be in \(0, 1\]"),
        (["--prompt", "x", "--init-image", "INIT", "--strength", "nan"], "--strength nan: must be a finite number"),
        (["--prompt", "x", "--init-image", "INIT", "--image", "INIT"], "--init-image and --image"),
        (["--prompt", "x", "--init-image", "missing.png"], "--init-image missing.png"),
        (["--prompt", "x", "--init-image", "INIT", "--strength", "0.1", "--steps", "4"], "runs no step"),
    ],
)
def test_bad_image_to_image_flags(capsys, tmp_path, init_png, argv, message):
    argv = [str(init_png) if a == "INIT" else a for a in argv]
    rc, _, err = cli(capsys, "generate", *argv, "--output", tmp_path / "out.png")
    lines = [line for line in err.splitlines() if line.strip() and "%|" not in line]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("ldm-hub generate: error:")
    import re

    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "out.png").exists()
