"""Issue 15, group 6: every argument that can be checked without a model is checked before one loads.

Model loading is patched to fail ("the model was loaded"); each cheap mistake must be reported instead, with the
flag named, and a control case shows the patched loader really is reached when the arguments are good."""

from __future__ import annotations

import pytest
import torch

from ldm_hub import LDMPipeline
from ldm_hub.cli import main

LOADED = "the model was loaded"


@pytest.fixture(autouse=True)
def loading_fails(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(LOADED)

    from ldm_hub import evaluation

    monkeypatch.setattr(LDMPipeline, "from_pretrained", refuse)
    monkeypatch.setattr(evaluation, "load_autoencoder", refuse)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on every machine


@pytest.fixture
def files(tmp_path):
    import PIL.Image

    PIL.Image.new("RGB", (32, 32)).save(tmp_path / "image.png")
    PIL.Image.new("L", (32, 32)).save(tmp_path / "mask.png")
    (tmp_path / "not-an-image.png").write_text("text")
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "layout.json").write_text('[{"label": "red circle", "box": [0, 0, 0.5, 0.5]}]')
    (tmp_path / "bad.json").write_text("[{")
    return tmp_path


def run(capsys, argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert LOADED not in err, f"{argv}: the model loaded before the check"
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return rc, err


GENERATE_CASES = [
    # (name, arguments, exit status, text of the message)
    (
        "output under a file",
        ["--output", "{t}/a-file/out.png"],
        2,
        "--output {t}/a-file/out.png: {t}/a-file is a file",
    ),
    ("output .png is a folder", ["--output", "{t}/dir.png"], 2, "--output {t}/dir.png: {t}/dir.png is a folder"),
    ("steps 0", ["--steps", "0"], 2, "--steps 0: must be >= 1"),
    ("num-images 0", ["--num-images", "0"], 2, "--num-images 0: must be >= 1"),
    ("height 0", ["--height", "0"], 2, "--height 0: must be > 0"),
    ("width negative", ["--width", "-32"], 2, "--width -32: must be > 0"),
    ("guidance nan", ["--guidance-scale", "nan"], 2, "--guidance-scale nan: must be a finite number"),
    ("guidance inf", ["--guidance-scale", "inf"], 2, "--guidance-scale inf: must be a finite number"),
    ("guidance negative", ["--guidance-scale", "-2"], 2, "--guidance-scale -2.0: must be >= 0"),
    ("eta nan", ["--eta", "nan"], 2, "--eta nan: must be a finite number"),
    ("tile-size 0", ["--tile-size", "0"], 2, "--tile-size 0: must be > 0"),
    ("tile-overlap alone", ["--tile-overlap", "8"], 2, "--tile-overlap needs --tile-size"),
    ("image missing", ["--image", "{t}/missing.png"], 2, "cannot read --image {t}/missing.png: [Errno 2]"),
    ("image unreadable", ["--image", "{t}/not-an-image.png"], 2, "cannot read --image {t}/not-an-image.png"),
    ("mask without image", ["--mask", "{t}/mask.png"], 2, "--mask needs --image"),
    ("mask missing", ["--image", "{t}/image.png", "--mask", "{t}/nope.png"], 2, "cannot read --mask {t}/nope.png"),
    ("segmentation missing", ["--segmentation", "{t}/seg.png"], 2, "cannot read --segmentation {t}/seg.png"),
    ("layout bad JSON", ["--layout", "[{"], 2, "--layout is not valid JSON"),
    ("layout file bad JSON", ["--layout", "{t}/bad.json"], 2, "--layout {t}/bad.json is not valid JSON"),
    ("layout neither", ["--layout", "{t}/none.json"], 2, "is neither inline JSON nor an existing JSON file"),
    ("layout box outside", ["--layout", '[{"label": "x", "box": [0, 0, 2, 1]}]'], 2, "--layout: layout 0, object 0"),
    ("layout box string", ["--layout", '[{"label": "x", "box": "0 0 1 1"}]'], 2, "must be four numbers"),
    ("layout keys", ["--layout", '[{"label": "x"}]'], 2, "--layout: layout 0, object 0: expected a dict"),
    ("class label", ["--class-label", "3,x"], 2, "--class-label 'x' is not an integer class id"),
    ("device no cuda", ["--device", "cuda"], 1, "--device cuda: CUDA is not available"),
    ("device unknown", ["--device", "tpu9"], 2, "--device 'tpu9' is not a torch device"),
]


@pytest.mark.parametrize("name, argv, code, text", GENERATE_CASES, ids=[c[0] for c in GENERATE_CASES])
def test_generate_checks_before_loading(capsys, files, name, argv, code, text):
    argv = [a.replace("{t}", str(files)) for a in argv]
    if "--output" not in argv:
        argv += ["--output", str(files / "out.png")]
    rc, err = run(capsys, ["generate", "--model", files, *argv])
    assert rc == code and err.startswith("ldm-hub generate: error: ") and text.replace("{t}", str(files)) in err


def test_generate_scheduler_name_is_checked_by_the_parser(capsys, files):
    with pytest.raises(SystemExit) as info:
        main(["generate", "--model", str(files), "--scheduler", "euler"])
    assert info.value.code == 2 and "invalid choice: 'euler'" in capsys.readouterr().err


def test_good_arguments_reach_the_loader(capsys, files):
    """The control: with nothing wrong the (patched) loader is called, so the cases above did stop before it."""
    argv = ["generate", "--model", str(files), "--image", str(files / "image.png"), "--mask", str(files / "mask.png")]
    argv += ["--layout", str(files / "layout.json"), "--output", str(files / "out.png")]
    assert main(argv) == 1
    assert LOADED in capsys.readouterr().err


EVALUATE_CASES = [
    ("num-samples 0", ["--num-samples", "0"], 2, "--num-samples 0: must be >= 1"),
    ("steps negative", ["--steps", "-1"], 2, "--steps -1: must be >= 1"),
    ("batch-size 0", ["--batch-size", "0"], 2, "--batch-size 0: must be >= 1"),
    ("guidance nan", ["--guidance-scale", "nan"], 2, "--guidance-scale nan: must be a finite number"),
    ("device", ["--device", "cuda:0"], 1, "--device cuda:0: CUDA is not available"),
    ("json under file", ["--json", "{t}/a-file/r.json"], 2, "--json {t}/a-file/r.json: {t}/a-file is a file"),
    ("images under file", ["--save-images", "{t}/a-file/img"], 2, "--save-images {t}/a-file/img"),
    ("fail-under metric", ["--fail-under", "accuracy=0.5"], 2, "--fail-under: task 'autoencoder' has no metric"),
    ("fail-under form", ["--fail-under", "0.5"], 2, "--fail-under '0.5': expected METRIC=VALUE"),
]


@pytest.mark.parametrize("name, argv, code, text", EVALUATE_CASES, ids=[c[0] for c in EVALUATE_CASES])
def test_evaluate_checks_before_loading(capsys, files, name, argv, code, text):
    argv = [a.replace("{t}", str(files)) for a in argv]
    rc, err = run(capsys, ["evaluate", files, "--task", "autoencoder", *argv])
    assert rc == code and err.startswith("ldm-hub evaluate: error: ") and text.replace("{t}", str(files)) in err


def test_evaluate_good_arguments_reach_the_loader(capsys, files):
    assert main(["evaluate", str(files), "--task", "autoencoder", "--fail-under", "psnr=20"]) == 1
    assert LOADED in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, code, text",
    [
        (["--max-steps", "0"], 2, "--max-steps 0: must be >= 1"),
        (["--max-upload-mb", "-1"], 2, "--max-upload-mb -1.0: must be > 0"),
        (["--device", "cuda"], 1, "--device cuda: CUDA is not available"),
        (["--port", "99999"], 2, "--port 99999: must be <= 65535"),
    ],
)
def test_demo_checks_before_loading(capsys, monkeypatch, argv, code, text):
    pytest.importorskip("gradio")
    import ldm_hub.demo

    monkeypatch.setattr(ldm_hub.demo, "serve", lambda args: (_ for _ in ()).throw(AssertionError(LOADED)))
    rc, err = run(capsys, ["demo", *argv])
    assert rc == code and err.startswith("ldm-hub demo: error: ") and text in err


@pytest.mark.parametrize(
    "setup, argv, code, text",
    [
        ("no token", [], 1, "no Hub token: log in with `hf auth login`, set HF_TOKEN, or pass --token"),
        ("offline", ["--token", "hf_x"], 1, "HF_HUB_OFFLINE is set"),
        ("empty token", ["--token", " "], 2, "--token is empty"),
        ("not a pipeline folder", ["--token", "hf_x"], 2, "no model_index.json there"),
    ],
)
def test_push_checks_before_loading(capsys, monkeypatch, files, setup, argv, code, text):
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", setup == "offline")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None if setup == "no token" else "hf_stored")
    rc, err = run(capsys, ["push", files, "me/repo", *argv])
    assert rc == code and err.startswith("ldm-hub push: error: ") and text in err


def test_train_settings_are_checked_before_anything_loads(capsys, tmp_path):
    rc, err = run(capsys, ["train", "ldm", "--output-dir", tmp_path / "run", "--batch-size", "0"])
    assert rc == 2 and "--batch-size: batch_size must be >= 1" in err
