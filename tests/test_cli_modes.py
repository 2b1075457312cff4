"""`ldm-hub generate` for the conditioning modes: --layout, --class-label, --segmentation, --image + --mask,
--tile-size. Tiny models built from ldm_hub's classes (and one converted CompVis checkpoint), saved to folders;
most runs go through ``ldm_hub.cli.main`` in-process (the console script itself is run once)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from test_pipeline_modes import CATEGORIES, make, photo, segmentation_map, square_mask, unet, vq
from utils import randomize_

from ldm_hub import ClassEmbedder, LayoutTokenizer, LDMBertModel, LDMPipeline, SemanticMapEncoder
from ldm_hub.cli import main

LAYOUT = [{"label": "red circle", "box": [0.1, 0.1, 0.5, 0.6]}, {"label": 4, "box": [0.5, 0.0, 1.0, 1.0]}]


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def api(folder, **kwargs):
    pipe = LDMPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe(generator=torch.Generator().manual_seed(kwargs.pop("seed", 0)), **kwargs).images


def pixels(path) -> np.ndarray:
    return np.asarray(PIL.Image.open(path))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Folders of tiny layout / class / semantic / inpainting / super-resolution pipelines."""
    root = tmp_path_factory.mktemp("cli-modes")
    tok = LayoutTokenizer(vocab_size=1024, max_objects=4, categories=CATEGORIES)
    bert = LDMBertModel(
        vocab_size=1024,
        max_position_embeddings=tok.sequence_length,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        attention_head_dim=16,
        intermediate_size=64,
    )
    pipes = {
        "layout": make(vae=vq(), unet=unet(3, context_dim=32), cond_encoder=randomize_(bert, 2).eval(), tokenizer=tok),
        "class": make(
            vae=vq(),
            unet=unet(3, context_dim=32),
            cond_encoder=randomize_(ClassEmbedder(num_classes=11, embed_dim=32, null_class=10), 3).eval(),
        ),
        "semantic": make(vae=vq(), unet=unet(6), cond_encoder=randomize_(SemanticMapEncoder(num_classes=6), 4).eval()),
        "inpaint": make(vae=vq(noattn=True), unet=unet(7)),
        "superres": make(vae=vq(), unet=unet(6)),
    }
    folders = {}
    for name, pipe in pipes.items():
        pipe.save_pretrained(root / name)
        folders[name] = root / name
    return folders


def test_help_lists_the_mode_flags(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = capsys.readouterr().out
    for flag in ("--layout", "--class-label", "--segmentation", "--mask", "--image", "--tile-size", "--tile-overlap"):
        assert flag in out


def test_layout_inline_and_file(models, tmp_path, capsys):
    code, out, err = cli(
        capsys,
        "generate",
        "--model",
        models["layout"],
        "--layout",
        json.dumps(LAYOUT),
        "--steps",
        "2",
        "--guidance-scale",
        "2",
        "--seed",
        "3",
        "--output",
        tmp_path / "a.png",
    )
    assert code == 0, err
    assert f"wrote {tmp_path / 'a.png'}" in out
    ref = api(models["layout"], layout=LAYOUT, num_inference_steps=2, guidance_scale=2.0, seed=3)[0]
    assert np.array_equal(pixels(tmp_path / "a.png"), np.asarray(ref))
    (tmp_path / "layout.json").write_text(json.dumps(LAYOUT))
    code, _, err = cli(
        capsys,
        "generate",
        "--model",
        models["layout"],
        "--layout",
        tmp_path / "layout.json",
        "--steps",
        "2",
        "--guidance-scale",
        "2",
        "--seed",
        "3",
        "--output",
        tmp_path / "b.png",
    )
    assert code == 0, err
    assert np.array_equal(pixels(tmp_path / "a.png"), pixels(tmp_path / "b.png"))


def test_layout_batch_of_layouts_into_folder(models, tmp_path, capsys):
    layouts = [LAYOUT, [{"label": "sky", "box": [0, 0, 1, 0.3]}]]
    code, out, err = cli(
        capsys,
        "generate",
        "--model",
        models["layout"],
        "--layout",
        json.dumps(layouts),
        "--num-images",
        "2",
        "--steps",
        "1",
        "--output",
        tmp_path / "many",
    )
    assert code == 0, err
    assert out.count("wrote") == 4 and len(list((tmp_path / "many").glob("*.png"))) == 4


def test_class_labels_repeated_and_comma_list(models, tmp_path, capsys):
    code, out, err = cli(
        capsys,
        "generate",
        "--model",
        models["class"],
        "--class-label",
        "3",
        "--class-label",
        "7,9",
        "--guidance-scale",
        "3",
        "--steps",
        "2",
        "--output",
        tmp_path / "c.png",
    )
    assert code == 0, err
    files = [tmp_path / f"c-{i}.png" for i in range(3)]
    assert all(f.is_file() for f in files)
    ref = api(models["class"], class_labels=[3, 7, 9], guidance_scale=3.0, num_inference_steps=2)
    for f, r in zip(files, ref):
        assert np.array_equal(pixels(f), np.asarray(r))


def test_segmentation_png(models, tmp_path, capsys):
    ids = segmentation_map(48, 64)[0].astype(np.uint8)
    PIL.Image.fromarray(ids, mode="L").save(tmp_path / "seg.png")
    code, _, err = cli(
        capsys,
        "generate",
        "--model",
        models["semantic"],
        "--segmentation",
        tmp_path / "seg.png",
        "--steps",
        "2",
        "--output",
        tmp_path / "s.png",
    )
    assert code == 0, err
    image = pixels(tmp_path / "s.png")
    assert image.shape == (48, 64, 3)  # the segmentation's size
    ref = api(models["semantic"], segmentation=PIL.Image.fromarray(ids, mode="L"), num_inference_steps=2)[0]
    assert np.array_equal(image, np.asarray(ref))


def test_inpainting_image_and_mask(models, tmp_path, capsys):
    photo().save(tmp_path / "photo.png")
    square_mask().save(tmp_path / "mask.png")
    code, _, err = cli(
        capsys,
        "generate",
        "--model",
        models["inpaint"],
        "--image",
        tmp_path / "photo.png",
        "--mask",
        tmp_path / "mask.png",
        "--steps",
        "2",
        "--output",
        tmp_path / "filled.png",
    )
    assert code == 0, err
    filled, original = pixels(tmp_path / "filled.png"), np.asarray(photo())
    keep = np.asarray(square_mask()) < 128
    assert np.abs(filled[keep].astype(int) - original[keep].astype(int)).max() <= 1  # outside the mask: the input
    assert np.abs(filled[~keep].astype(int) - original[~keep].astype(int)).max() > 10  # inside: generated
    ref = api(models["inpaint"], image=photo(), mask_image=square_mask(), num_inference_steps=2)[0]
    assert np.array_equal(filled, np.asarray(ref))


def test_superres_tiled(models, tmp_path, capsys):
    low = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    PIL.Image.fromarray(low).save(tmp_path / "low.png")
    code, _, err = cli(
        capsys,
        "generate",
        "--model",
        models["superres"],
        "--image",
        tmp_path / "low.png",
        "--tile-size",
        "64",
        "--tile-overlap",
        "16",
        "--steps",
        "1",
        "--output",
        tmp_path / "up.png",
    )
    assert code == 0, err
    assert pixels(tmp_path / "up.png").shape == (128, 128, 3)
    ref = api(
        models["superres"], image=PIL.Image.fromarray(low), tile_size=64, tile_overlap=16, num_inference_steps=1
    )[0]
    assert np.array_equal(pixels(tmp_path / "up.png"), np.asarray(ref))


def test_mode_flag_errors(models, tmp_path, capsys):
    PIL.Image.new("RGB", (32, 32)).save(tmp_path / "rgb.png")
    PIL.Image.new("L", (36, 32)).save(tmp_path / "odd.png")
    PIL.Image.fromarray(np.full((32, 32), 9, np.uint8), mode="L").save(tmp_path / "nine.png")
    photo().save(tmp_path / "photo.png")
    PIL.Image.new("L", (16, 32), 255).save(tmp_path / "small-mask.png")
    cases = [
        (("--model", models["layout"], "--layout", "[{'label': 0}]"), "--layout is not valid JSON"),
        (
            ("--model", models["layout"], "--layout", tmp_path / "none.json"),
            "is neither inline JSON nor an existing JSON file",
        ),
        (("--model", models["layout"], "--layout", '"red circle"'), "neither inline JSON"),
        (
            ("--model", models["layout"], "--layout", '[{"label": 0, "box": [0.2, 0.1, 1.5, 0.3]}]'),
            r"object 0: box [0.2, 0.1, 1.5, 0.3] is outside [0, 1]",
        ),
        (
            ("--model", models["layout"], "--layout", '[{"label": 0, "box": [0.6, 0.1, 0.2, 0.3]}]'),
            r"has x1 < x0 or y1 < y0",
        ),
        (
            ("--model", models["layout"], "--layout", '[{"label": "moon", "box": [0.1, 0.1, 0.2, 0.2]}]'),
            "unknown category 'moon'; known categories: 'red circle'",
        ),
        (
            ("--model", models["layout"], "--layout", json.dumps([LAYOUT[0]] * 5)),
            "5 objects is more than this tokenizer holds (max_objects=4)",
        ),
        (("--model", models["class"], "--class-label", "11"), "class id 11 (entry 0) is out of range [0, 11)"),
        (("--model", models["class"], "--class-label", "3,x"), "--class-label 'x' is not an integer class id"),
        (
            ("--model", models["class"], "--layout", json.dumps(LAYOUT)),
            "`layout` cannot be used with this model: its conditioning is 'class'",
        ),
        (
            ("--model", models["semantic"], "--segmentation", tmp_path / "rgb.png"),
            "has mode 'RGB': a segmentation must be an index map",
        ),
        (("--model", models["semantic"], "--segmentation", tmp_path / "odd.png"), "segmentation size 36x32"),
        (
            ("--model", models["semantic"], "--segmentation", tmp_path / "nine.png"),
            "class id 9, outside the model's 6 classes",
        ),
        (("--model", models["semantic"], "--segmentation", tmp_path / "missing.png"), "cannot read --segmentation"),
        (
            ("--model", models["inpaint"], "--image", tmp_path / "photo.png", "--mask", tmp_path / "small-mask.png"),
            "`mask_image` size 16x32 differs from `image` size 32x32",
        ),
        (("--model", models["inpaint"], "--mask", tmp_path / "small-mask.png"), "--mask needs --image"),
        (("--model", models["inpaint"], "--image", tmp_path / "photo.png"), "pass `image` and `mask_image`"),
        (
            ("--model", models["semantic"], "--segmentation", tmp_path / "nine.png", "--tile-size", "30"),
            "`tile_size`=30 must be a positive multiple of 8",
        ),
    ]
    for args, message in cases:
        code, _, err = cli(capsys, "generate", *args, "--steps", "1", "--output", tmp_path / "x.png")
        assert code == 2 and message in err and "Traceback" not in err, (args, err)


def test_console_script_with_a_converted_class_model(tmp_path, capsys):
    """The installed ``ldm-hub`` on a tiny converted cin256-v2 checkpoint: guided, two labels."""
    pytest.importorskip("ldm")
    pytest.importorskip("taming")
    import compvis_oracle as oracle

    config = oracle.tiny(oracle.ZOO["cin256-v2"])
    original = oracle.OriginalModel(config)
    LDMPipeline.from_single_file(
        original.write_checkpoint(tmp_path / "cin.ckpt"), original_config=config
    ).save_pretrained(tmp_path / "cin")
    exe = shutil.which("ldm-hub", path=os.path.dirname(sys.executable))
    assert exe, "the ldm-hub console script is not installed next to this Python"
    proc = subprocess.run(
        [
            exe,
            "generate",
            "--model",
            str(tmp_path / "cin"),
            "--class-label",
            "1,999",
            "--guidance-scale",
            "3",
            "--steps",
            "2",
            "--height",
            "64",
            "--width",
            "64",
            "--output",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    files = sorted((tmp_path / "out").glob("*.png"))
    assert len(files) == 2 and PIL.Image.open(files[0]).size == (64, 64)
    code, _, err = cli(
        capsys, "generate", "--model", tmp_path / "cin", "--class-label", "1001", "--output", tmp_path / "bad.png"
    )
    assert code == 2 and "class id 1001 (entry 0) is out of range [0, 1001)" in err
