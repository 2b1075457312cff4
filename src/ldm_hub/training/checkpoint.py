"""Checkpoints with exact resume, written atomically.

A checkpoint is a folder ``checkpoints/checkpoint-00001000`` holding everything a run's future depends on:

======================  ====================================================================
file                    content
======================  ====================================================================
model-NAME.safetensors  each trained module's weights (the discriminator too)
optimizer-NAME.pt       each optimizer's state (Adam moments, step counts)
lr_scheduler-NAME.pt    each learning-rate schedule's state
ema-NAME.pt             EMA shadow weights and update count
scaler.pt               the fp16 gradient scaler (mixed_precision="fp16" only)
process-R.pt            per process R: torch (+CUDA) / Python / NumPy RNG states and its data position
trainer_state.json      step, data position, values fixed during training (e.g. scaling_factor), config
complete.json           written last: every file's size (the checkpoint is complete only with it)
======================  ====================================================================

Every ``.pt`` file holds only tensors and plain values and is read with ``torch.load(weights_only=True)``.
All processes write into ``.checkpoint-00001000.tmp``; when all are done the main process renames it to its
final name in one ``os.replace``, so a crash at any moment leaves the previous complete checkpoint as the
newest one (unfinished ``.tmp`` folders are ignored and removed by the next save). Several nodes need a
shared file system for the checkpoint folder.

Resuming reads every file of a checkpoint before applying any; ``--resume latest`` on a damaged checkpoint (no
complete.json, a truncated file, corrupt JSON, weights or optimizer state) names the file and falls back to the
newest intact one (:func:`resume_checkpoint`).

Fault injection for tests: ``LDM_HUB_FAULT_KILL_AT_STEP=N`` SIGKILLs the process right after optimizer step
N; ``LDM_HUB_FAULT_KILL_IN_CHECKPOINT=N`` SIGKILLs it half-way through writing checkpoint N;
``LDM_HUB_FAULT_NAN_LOSS_AT_STEP=N`` makes the loss of step N NaN (the run must stop there).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
KILL_AT_STEP = "LDM_HUB_FAULT_KILL_AT_STEP"
KILL_IN_CHECKPOINT = "LDM_HUB_FAULT_KILL_IN_CHECKPOINT"
NAN_LOSS_AT_STEP = "LDM_HUB_FAULT_NAN_LOSS_AT_STEP"
COMPLETE_FILE = "complete.json"


class DamagedCheckpointError(ValueError):
    """A checkpoint file is missing, truncated or corrupt; the message names it."""


def poison_loss(loss: torch.Tensor, step: int) -> torch.Tensor:
    """The loss, or NaN if ``LDM_HUB_FAULT_NAN_LOSS_AT_STEP`` names ``step`` (tests of the non-finite guard)."""
    value = os.environ.get(NAN_LOSS_AT_STEP)
    return loss * float("nan") if value is not None and int(value) == step else loss


def maybe_fault(variable: str, step: int) -> None:
    """SIGKILL this process if the fault-injection variable names ``step`` (tests of crash recovery)."""
    value = os.environ.get(variable)
    if value is not None and int(value) == step:
        os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------------------------------------- RNG state
def capture_rng_state() -> dict:
    """torch / CUDA / Python / NumPy global RNG states as tensors and plain values (weights_only-safe)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------- folders
def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := CHECKPOINT_PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: str | Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def resolve_resume(resume: str | None, root: Path) -> Path | None:
    """``None`` → no resume; ``"latest"`` → newest complete checkpoint (or None); else that folder."""
    if not resume:
        return None
    if resume == "latest":
        return latest_checkpoint(root)
    path = Path(resume)
    if not (path / "trainer_state.json").is_file():
        raise ValueError(f"--resume {resume}: not a checkpoint folder (no trainer_state.json)")
    return path


# ---------------------------------------------------------------------------------------------- save / load
def save_checkpoint(
    accelerator,
    root: str | Path,
    step: int,
    *,
    modules: dict[str, torch.nn.Module],
    optimizers: dict,
    schedulers: dict,
    emas: dict,
    trainer_state: dict,
    process_state: dict,
    total_limit: int | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically (every process calls this); returns its folder."""
    root = Path(root)
    final = root / f"checkpoint-{step:08d}"
    tmp = root / f".checkpoint-{step:08d}.tmp"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".checkpoint-*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    accelerator.wait_for_everyone()

    torch.save({"rng": capture_rng_state(), "data": process_state}, tmp / f"process-{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        for name, module in modules.items():
            state = {
                k: v.detach().contiguous().cpu() for k, v in accelerator.unwrap_model(module).state_dict().items()
            }
            save_file(state, str(tmp / f"model-{name}.safetensors"))
        maybe_fault(KILL_IN_CHECKPOINT, step)
        for name, optimizer in optimizers.items():
            torch.save(optimizer.state_dict(), tmp / f"optimizer-{name}.pt")
        for name, scheduler in schedulers.items():
            torch.save(scheduler.state_dict(), tmp / f"lr_scheduler-{name}.pt")
        for name, ema in emas.items():
            torch.save(ema.state_dict(), tmp / f"ema-{name}.pt")
        if accelerator.scaler is not None:
            torch.save(accelerator.scaler.state_dict(), tmp / "scaler.pt")
        text = json.dumps({"step": step, **trainer_state}, indent=2, default=str) + "\n"
        (tmp / "trainer_state.json").write_text(text)
    accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        for path in tmp.iterdir():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        sizes = {path.name: path.stat().st_size for path in sorted(tmp.iterdir())}
        with open(tmp / COMPLETE_FILE, "w") as f:  # last: the mark that every file above is whole
            f.write(json.dumps({"step": step, "files": sizes}, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if final.exists():  # re-saving a step after a resume: swap the old folder out first
            old = root / f".checkpoint-{step:08d}.old"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        if total_limit is not None:
            for stale in list_checkpoints(root)[:-total_limit]:
                shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def verify_checkpoint(folder: str | Path, *, require_mark: bool = True) -> None:
    """Raise :class:`DamagedCheckpointError` naming the file if ``folder`` is not marked complete or a file it
    lists is missing or has another size than when it was written."""
    folder = Path(folder)
    mark = folder / COMPLETE_FILE
    if not mark.is_file():
        if require_mark:
            raise DamagedCheckpointError(f"{mark}: missing, so the checkpoint {folder} was never completed")
        return
    try:
        sizes = json.loads(mark.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DamagedCheckpointError(f"{mark}: corrupt ({type(e).__name__}: {e})") from None
    for name, size in sizes.items():
        path = folder / name
        if not path.is_file():
            raise DamagedCheckpointError(f"{path}: missing from the checkpoint")
        if path.stat().st_size != size:
            raise DamagedCheckpointError(f"{path}: truncated or changed ({path.stat().st_size} bytes, written {size})")


def _read(path: Path, reader):
    if not path.is_file():
        raise DamagedCheckpointError(f"{path}: missing from the checkpoint")
    try:
        return reader(path)
    except Exception as e:  # noqa: BLE001 - each format raises its own types for a damaged file
        reason = (str(e).splitlines() or [""])[0][:200]
        raise DamagedCheckpointError(f"{path}: unreadable ({type(e).__name__}: {reason})") from None


def _torch_file(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _json_file(path: Path) -> dict:
    state = json.loads(path.read_text())
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise ValueError("not a trainer state (no integer 'step')")
    return state


def load_checkpoint(
    accelerator,
    folder: str | Path,
    *,
    modules: dict[str, torch.nn.Module],
    optimizers: dict,
    schedulers: dict,
    emas: dict,
    require_mark: bool = False,
) -> tuple[dict, dict | None]:
    """Restore a checkpoint into the given objects and this process's RNG; returns (trainer state, data state).

    Every file is read (and checked) before anything is applied, so a damaged checkpoint raises
    :class:`DamagedCheckpointError` naming the file and leaves the objects as they were. The data state is None
    when the checkpoint was written by fewer processes than this run has.
    """
    folder = Path(folder)
    verify_checkpoint(folder, require_mark=require_mark)
    state = _read(folder / "trainer_state.json", _json_file)
    weights = {name: _read(folder / f"model-{name}.safetensors", lambda p: load_file(str(p))) for name in modules}
    optimizer_states = {name: _read(folder / f"optimizer-{name}.pt", _torch_file) for name in optimizers}
    scheduler_states = {name: _read(folder / f"lr_scheduler-{name}.pt", _torch_file) for name in schedulers}
    ema_states = {name: _read(folder / f"ema-{name}.pt", _torch_file) for name in emas}
    scaler = None
    if accelerator.scaler is not None and (folder / "scaler.pt").is_file():
        scaler = _read(folder / "scaler.pt", _torch_file)
    process_file = folder / f"process-{accelerator.process_index}.pt"
    process = _read(process_file, _torch_file) if process_file.is_file() else None

    for name, module in modules.items():
        accelerator.unwrap_model(module).load_state_dict(weights[name], strict=True)
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(optimizer_states[name])
    for name, scheduler in schedulers.items():
        scheduler.load_state_dict(scheduler_states[name])
    for name, ema in emas.items():
        ema.load_state_dict(ema_states[name])
    if scaler is not None:
        accelerator.scaler.load_state_dict(scaler)
    data_state = None
    if process is not None:
        restore_rng_state(process["rng"])
        data_state = process["data"]
    return state, data_state


def resume_checkpoint(accelerator, resume: str | None, root: str | Path, **parts) -> tuple[Path, dict, dict | None]:
    """``--resume``: restore the named checkpoint, or for ``"latest"`` the newest intact one under ``root``.

    A damaged newest checkpoint is named (its file) and skipped for the next newest; returns (folder, trainer
    state, data state), or None when there is nothing to resume. An explicitly named damaged checkpoint, or only
    damaged ones, raise :class:`DamagedCheckpointError`.
    """
    folder = resolve_resume(resume, Path(root))
    if folder is None:
        return None
    if resume != "latest":
        return folder, *load_checkpoint(accelerator, folder, **parts)
    damaged = []
    for candidate in reversed(list_checkpoints(root)):
        try:
            return candidate, *load_checkpoint(accelerator, candidate, require_mark=True, **parts)
        except DamagedCheckpointError as e:
            damaged.append(str(e))
            if accelerator.is_main_process:
                print(f"--resume latest: skipping a damaged checkpoint: {e}", file=sys.stderr)
    raise DamagedCheckpointError(
        f"--resume latest: no intact checkpoint under {root} ({'; '.join(damaged)}); remove the damaged ones to "
        "start afresh"
    )


def checkpoint_step(accelerator, config, output, step: int, stream, extra: dict, parts: dict) -> None:
    """Write ``checkpoints/checkpoint-<step>`` with everything exact resume needs: ``parts`` (models, optimizers,
    schedulers, EMA), the data position, the resolved config and ``extra`` (e.g. the training time so far)."""
    from .config import config_to_dict

    save_checkpoint(
        accelerator,
        output / "checkpoints",
        step,
        total_limit=config.checkpoints_total_limit,
        trainer_state={"data": stream.state_dict(), "extra": extra, "config": config_to_dict(config)},
        process_state=stream.state_dict(),
        **parts,
    )
