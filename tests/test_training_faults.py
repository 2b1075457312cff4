"""Issue 15, group 2: training never saves or pushes garbage.

A non-finite loss or gradient stops the run with an error naming the step and the last good checkpoint, and
nothing is saved or pushed after it (fp16 GradScaler-skipped steps are counted; 20 in a row is the same error).
``--resume latest`` on a damaged checkpoint names the file and falls back to the newest intact one.
"""

from __future__ import annotations

import json
import types
import warnings
from pathlib import Path

import pytest
import torch

from ldm_hub.cli import main as cli_main
from ldm_hub.training import AutoencoderTrainingConfig, train_autoencoder
from ldm_hub.training.checkpoint import (
    COMPLETE_FILE,
    DamagedCheckpointError,
    load_checkpoint,
    resume_checkpoint,
    save_checkpoint,
)
from ldm_hub.training.common import MAX_SKIPPED_STEPS, FiniteGuard, TrainingDivergedError

TINY = dict(dataset="shapes:16", batch_size=4, log_every=1, progress_bar=False, report_to="none", num_sample_images=1)


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory):
    warnings.filterwarnings("ignore", message="no LPIPS weights")
    out = tmp_path_factory.mktemp("ae") / "kl"
    train_autoencoder(AutoencoderTrainingConfig(output_dir=str(out), model="kl-f4-tiny", max_steps=1, **TINY))
    return out


def _ldm_argv(out: Path, autoencoder: Path, steps: int, *extra: str) -> list[str]:
    return [
        "train", "ldm", "--output-dir", str(out), "--autoencoder", str(autoencoder), "--dataset", "shapes:16",
        "--conditioning", "unconditional", "--model", "unet-unconditional-tiny", "--batch-size", "2",
        "--max-steps", str(steps), "--checkpoint-every", "2", "--report-to", "none", "--no-progress-bar",
        "--num-sample-images", "1", "--sample-steps", "1", "--ema-decay", "0.9", *extra,
    ]  # fmt: skip


def _error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.startswith("ldm-hub")]
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------------------------------------- non-finite
def test_nan_loss_stops_the_run_naming_step_and_last_checkpoint(tmp_path, autoencoder, monkeypatch, capsys):
    from ldm_hub import LDMPipeline

    pushed = []
    monkeypatch.setattr(LDMPipeline, "push_to_hub", lambda self, *a, **k: pushed.append(a))
    monkeypatch.setenv("LDM_HUB_FAULT_NAN_LOSS_AT_STEP", "3")
    out = tmp_path / "run"
    code = cli_main(_ldm_argv(out, autoencoder, 6, "--push-to-hub", "user/garbage", "--sample-every", "1"))
    line = _error_line(capsys.readouterr().err)
    assert code == 1
    assert line.startswith("ldm-hub train: error: step 3: non-finite loss or gradient (loss=nan")
    assert str(out / "checkpoints" / "checkpoint-00000002") in line and "--resume latest" in line
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-00000002"]
    assert not (out / "model_index.json").exists() and not (out / "unet").exists() and pushed == []
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step-00000001.png", "step-00000002.png"]


def test_diverging_learning_rate_stops_before_anything_is_saved(tmp_path, autoencoder, capsys):
    out = tmp_path / "run"
    code = cli_main(_ldm_argv(out, autoencoder, 6, "--learning-rate", "1e30", "--max-grad-norm", "none"))
    line = _error_line(capsys.readouterr().err)
    assert code == 1 and "non-finite loss or gradient" in line and "no checkpoint was written before it" in line
    assert line.startswith("ldm-hub train: error: step ")
    assert not (out / "model_index.json").exists() and not (out / "checkpoints").exists()


def test_nan_in_the_autoencoder_run_names_the_step(tmp_path, monkeypatch):
    monkeypatch.setenv("LDM_HUB_FAULT_NAN_LOSS_AT_STEP", "1")
    out = tmp_path / "ae"
    config = AutoencoderTrainingConfig(output_dir=str(out), model="kl-f4-tiny", max_steps=2, **TINY)
    with pytest.raises(TrainingDivergedError, match=r"^step 1: non-finite loss or gradient \(loss=nan.*no checkpoint"):
        train_autoencoder(config)
    assert not (out / "config.json").exists() and not (out / "diffusion_pytorch_model.safetensors").exists()


def _guard(scaler: bool, tmp_path: Path) -> FiniteGuard:
    accelerator = types.SimpleNamespace(
        scaler=object() if scaler else None, device=torch.device("cpu"), reduce=lambda t, reduction: t
    )
    return FiniteGuard(accelerator, tmp_path / "checkpoints")


def test_non_finite_gradient_is_named(tmp_path):
    guard = _guard(False, tmp_path)
    weight = torch.nn.Parameter(torch.ones(3))
    weight.grad = torch.tensor([1.0, float("inf"), 0.0])
    with pytest.raises(TrainingDivergedError, match=r"step 7: .*loss=0\.5, gradient norm=inf"):
        guard.check(7, {"loss": torch.tensor(0.5)}, [weight])
    weight.grad = torch.ones(3)
    guard.check(8, {"loss": torch.tensor(0.5)}, [weight])  # finite: no error


def test_fp16_skipped_steps_are_counted_and_twenty_in_a_row_stop(tmp_path):
    guard = _guard(True, tmp_path)
    skipped, good = types.SimpleNamespace(step_was_skipped=True), types.SimpleNamespace(step_was_skipped=False)
    weight = torch.nn.Parameter(torch.ones(1))
    weight.grad = torch.tensor([float("nan")])
    guard.check(1, {"loss": torch.tensor(float("inf"))}, [weight])  # the scaler's to skip: no error
    for step in range(1, MAX_SKIPPED_STEPS):
        guard.after_step(step, skipped)
    guard.after_step(MAX_SKIPPED_STEPS, good)  # a good step resets the run of skips
    assert guard.skipped == MAX_SKIPPED_STEPS - 1 and guard.skipped_in_a_row == 0
    for step in range(100, 100 + MAX_SKIPPED_STEPS - 1):
        guard.after_step(step, skipped)
    with pytest.raises(TrainingDivergedError, match=r"step 119: the fp16 loss scaler skipped 20 steps in a row"):
        guard.after_step(119, skipped)


# ---------------------------------------------------------------------------------------------- damaged checkpoints
@pytest.fixture
def saved(tmp_path):
    """Checkpoints 2 and 4 of a tiny model + AdamW, written by the real save_checkpoint."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    parts = dict(modules={"m": model}, optimizers={"m": optimizer}, schedulers={"m": schedule}, emas={})
    weights = {}
    for step in (2, 4):
        model(torch.randn(2, 4)).sum().backward()
        optimizer.step()
        save_checkpoint(accelerator, tmp_path, step, trainer_state={"data": {}}, process_state={}, **parts)
        weights[step] = model.weight.detach().clone()
    return accelerator, tmp_path, parts, weights


def _resume(saved, capsys, resume="latest"):
    accelerator, root, parts, _ = saved
    result = resume_checkpoint(accelerator, resume, root, **parts)
    return result, capsys.readouterr().err


def test_checkpoint_is_marked_complete_last(saved):
    _, root, _, _ = saved
    mark = json.loads((root / "checkpoint-00000004" / COMPLETE_FILE).read_text())
    assert set(mark["files"]) == {p.name for p in (root / "checkpoint-00000004").iterdir()} - {COMPLETE_FILE}


@pytest.mark.parametrize("damage, file", [
    ("corrupt", "trainer_state.json"),
    ("truncate", "model-m.safetensors"),
    ("truncate", "optimizer-m.pt"),
    ("corrupt", "optimizer-m.pt"),  # same size, other bytes: the load itself finds it
    ("delete", COMPLETE_FILE),  # never completed
])  # fmt: skip
def test_resume_latest_names_the_damaged_file_and_falls_back(saved, capsys, damage, file):
    _, root, parts, weights = saved
    path = root / "checkpoint-00000004" / file
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "corrupt":
        path.write_bytes(b"{" * len(data) if file.endswith(".json") else b"\x00" * len(data))
    else:
        path.unlink()
    parts["modules"]["m"].weight.data.zero_()
    (folder, state, _), err = _resume(saved, capsys)
    assert folder == root / "checkpoint-00000002" and state["step"] == 2
    assert f"skipping a damaged checkpoint: {path}" in err
    assert torch.equal(parts["modules"]["m"].weight, weights[2])


def test_resume_named_damaged_checkpoint_is_an_error(saved):
    accelerator, root, parts, _ = saved
    path = root / "checkpoint-00000004" / "model-m.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    before = parts["modules"]["m"].weight.detach().clone()
    with pytest.raises(DamagedCheckpointError, match=rf"{path}: truncated or changed"):
        load_checkpoint(accelerator, root / "checkpoint-00000004", **parts)
    assert torch.equal(parts["modules"]["m"].weight, before)  # nothing applied from a damaged checkpoint


def test_only_damaged_checkpoints_is_an_error_naming_them(saved, capsys):
    accelerator, root, parts, _ = saved
    for step in (2, 4):
        (root / f"checkpoint-0000000{step}" / "trainer_state.json").write_text("not json")
    with pytest.raises(DamagedCheckpointError, match=r"no intact checkpoint under .*checkpoint-00000004.*00000002"):
        resume_checkpoint(accelerator, "latest", root, **parts)


def test_cli_resume_latest_skips_a_damaged_checkpoint(tmp_path, autoencoder, capsys):
    out = tmp_path / "run"
    assert cli_main(_ldm_argv(out, autoencoder, 4)) == 0
    damaged = out / "checkpoints" / "checkpoint-00000004" / "trainer_state.json"
    damaged.write_text('{"step": 4, "data": ')
    capsys.readouterr()
    assert cli_main(_ldm_argv(out, autoencoder, 6, "--resume", "latest")) == 0
    captured = capsys.readouterr()
    assert f"--resume latest: skipping a damaged checkpoint: {damaged}: truncated or changed" in captured.err
    assert f"resumed from {out / 'checkpoints' / 'checkpoint-00000002'} at step 2" in captured.out
    assert json.loads((out / "training_info.json").read_text())["steps"] == 6

    named = out / "checkpoints" / "checkpoint-00000006"
    (named / "optimizer-denoiser.pt").write_bytes(b"")
    code = cli_main(_ldm_argv(out, autoencoder, 8, "--resume", str(named)))
    line = _error_line(capsys.readouterr().err)
    assert code == 2 and line.startswith(f"ldm-hub train: error: {named / 'optimizer-denoiser.pt'}: truncated")
