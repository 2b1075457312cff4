"""What both trainers share: the accelerate set-up, optimisers and schedules, progress and logging, outputs."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
import warnings
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from ..loading import atomic_write_bytes
from .config import TrainingConfig

logger = logging.getLogger("ldm_hub.training")


def make_accelerator(config: TrainingConfig):
    """An ``accelerate.Accelerator`` for this config: precision, trackers (tensorboard by default) under
    OUTPUT/logs. The same code runs on one CPU, one GPU, or many through ``accelerate launch``."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    trackers = [t.strip() for t in config.report_to.split(",") if t.strip() and t.strip() != "none"]
    if "tensorboard" in trackers:
        from accelerate.utils import is_tensorboard_available

        if not is_tensorboard_available():
            warnings.warn(
                "tensorboard is not installed (pip install tensorboard): logging to no tracker", stacklevel=2
            )
            trackers.remove("tensorboard")
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != config.mixed_precision:
        # a second run in the same Python process with another precision: accelerate keeps one global
        # state, so start it afresh (the process group, if any, is kept)
        AcceleratorState._reset_state(reset_partial_state=False)
    project = ProjectConfiguration(project_dir=config.output_dir, logging_dir=str(Path(config.output_dir) / "logs"))
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        log_with=trackers or None,
        project_config=project,
        cpu=_several_cpu_processes(),
    )
    if trackers:
        scalars = {k: v for k, v in dataclasses.asdict(config).items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers(config.tracker_project_name, config=scalars)
    return accelerator


def _several_cpu_processes() -> bool:
    """Launched as several processes (``accelerate launch --multi_gpu --num_processes N`` or ``torchrun``) on a
    machine without GPUs: tell accelerate to use CPU processes (gloo); it only does so when asked."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    has_xpu = hasattr(torch, "xpu") and torch.xpu.is_available()
    return world > 1 and not torch.cuda.is_available() and not has_xpu


def build_optimizer(parameters, config: TrainingConfig, learning_rate: float | None = None) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        [p for p in parameters if p.requires_grad],
        lr=learning_rate or config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.weight_decay,
    )


def build_lr_scheduler(optimizer, config: TrainingConfig, num_steps: int | None = None):
    """The learning-rate schedule over ``num_steps`` (default ``max_steps``) optimizer steps, stepped once per
    optimizer step (not wrapped by accelerate, whose wrapper steps it once per process)."""
    from diffusers.optimization import get_scheduler

    steps = config.max_steps if num_steps is None else num_steps
    return get_scheduler(
        config.lr_scheduler, optimizer, num_warmup_steps=config.lr_warmup_steps, num_training_steps=max(steps, 1)
    )


def trainable_parameters(*modules) -> list[torch.nn.Parameter]:
    return [p for m in modules if m is not None for p in m.parameters() if p.requires_grad]


class Progress:
    """A tqdm bar (main process) with the running loss and samples/s, and scalar logging to the trackers."""

    def __init__(self, accelerator, config: TrainingConfig, start_step: int, samples_per_step: int):
        self.accelerator, self.config = accelerator, config
        self.samples_per_step = samples_per_step
        self.start_step = start_step
        self.bar = None
        if accelerator.is_main_process and config.progress_bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=config.max_steps, initial=start_step, desc="train", dynamic_ncols=True)
        self.window_start, self.window_steps = time.perf_counter(), 0
        self.samples_per_second = float("nan")
        self.history: list[dict] = []

    def update(self, step: int, losses: dict[str, torch.Tensor | float]) -> None:
        self.window_steps += 1
        if self.bar is not None:
            self.bar.update(1)
        if step % self.config.log_every and step != self.config.max_steps:
            return
        values = {}
        for name, value in losses.items():
            if isinstance(value, torch.Tensor):
                value = self.accelerator.reduce(value.detach().float(), reduction="mean").item()
            values[name] = float(value)
        elapsed = time.perf_counter() - self.window_start
        self.samples_per_second = self.window_steps * self.samples_per_step / max(elapsed, 1e-9)
        values["samples_per_second"] = self.samples_per_second
        self.window_start, self.window_steps = time.perf_counter(), 0
        self.history.append({"step": step, **values})
        self.accelerator.log(values, step=step)
        if self.bar is not None:
            shown = {
                k: (f"{v:.4g}" if k != "samples_per_second" else f"{v:.1f}")
                for k, v in values.items()
                if k in ("loss", "l1", "psnr", "d_loss", "samples_per_second")
            }
            self.bar.set_postfix(shown, refresh=False)
        elif self.accelerator.is_main_process:
            print(f"step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in values.items()), flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def image_grid(images: list[PIL.Image.Image], columns: int) -> PIL.Image.Image:
    w, h = images[0].size
    rows = math.ceil(len(images) / columns)
    grid = PIL.Image.new("RGB", (columns * w, rows * h), (255, 255, 255))
    for i, image in enumerate(images):
        grid.paste(image, ((i % columns) * w, (i // columns) * h))
    return grid


def tensor_to_pil(batch: torch.Tensor) -> list[PIL.Image.Image]:
    """(B, 3, H, W) in [-1, 1] → PIL images."""
    array = ((batch.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [PIL.Image.fromarray(a) for a in array]


def save_samples(accelerator, config: TrainingConfig, grid: PIL.Image.Image, step: int) -> Path:
    """Write OUTPUT/samples/step-N.png atomically and log it to image-capable trackers (main process)."""
    import io

    path = Path(config.output_dir) / "samples" / f"step-{step:08d}.png"
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    for tracker in accelerator.trackers:
        if hasattr(tracker, "log_images"):
            try:
                tracker.log_images({"samples": np.asarray(grid)[None]}, step=step, dataformats="NHWC")
            except TypeError:
                tracker.log_images({"samples": np.asarray(grid)[None]}, step=step)
    return path


def write_json(path: str | Path, data: dict) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def seed_all(seed: int) -> None:
    """Seed torch, NumPy and Python identically on every process (same initial weights everywhere)."""
    from accelerate.utils import set_seed

    set_seed(seed)


def seed_per_process(seed: int, accelerator) -> None:
    """Give each process its own noise stream after the weights are built (seed + process index)."""
    from accelerate.utils import set_seed

    set_seed(seed + accelerator.process_index)


def make_batch_stream(ds, reader, transform, config: TrainingConfig, accelerator):
    """This process's shard of the data as batches (resumable), reporting skipped bad rows once."""
    from .data import BatchStream

    stream = BatchStream(
        ds,
        reader,
        transform,
        config.batch_size,
        seed=config.seed,
        process_index=accelerator.process_index,
        num_processes=accelerator.num_processes,
        streaming=config.streaming,
        shuffle_buffer=config.shuffle_buffer,
        skip_bad_rows=config.skip_bad_rows,
        num_workers=config.num_workers,
    )
    if stream.skipped and accelerator.is_main_process:
        print(f"skipped {len(stream.skipped)} bad rows; first: {stream.skipped[0]}")
    return stream


# What a training run writes into its output folder (besides the final model's files).
RUN_ENTRIES = {"checkpoints", "logs", "samples", "latent-cache", "training_info.json", "training_config.json"}
RUN_FILES = {"caption-vocab.txt"}  # written by a conditioner's training set-up (text: the caption vocabulary)
MODEL_ENTRIES = {"model_index.json", "pipeline.py", "README.md", "config.json", "diffusion_pytorch_model.safetensors"}


def run_kind(folder: Path) -> str | None:
    """``"ldm"`` / ``"autoencoder"`` for a folder written by a trainer, ``""`` for one of an unknown kind, None for
    a folder holding anything a trainer does not write."""
    from ..loading import listed_components

    names = {p.name for p in folder.iterdir()}
    allowed = RUN_ENTRIES | RUN_FILES | MODEL_ENTRIES | listed_components(folder / "model_index.json")
    if names - allowed or not names & (RUN_ENTRIES | RUN_FILES):
        return None
    for source in [folder / "training_config.json", *sorted((folder / "checkpoints").glob("*/trainer_state.json"))]:
        try:
            config = json.loads(source.read_text())
        except (OSError, ValueError):
            continue
        config = config.get("config", config) if isinstance(config, dict) else {}
        if isinstance(config, dict) and config:
            return "ldm" if "conditioning" in config else "autoencoder"
    return ""


def check_output_dir(output_dir: str | Path, *, kind: str, resume: str | None, overwrite: bool) -> None:
    """Refuse an output folder that holds something other than this trainer's own run (``--overwrite`` allows
    it), and a previous run of it without ``--resume``; an :class:`~ldm_hub.loading.OutputExistsError` names it."""
    from ..loading import OutputExistsError, check_output_folder

    if not output_dir:
        return  # the config's own validation names the missing --output-dir
    folder = check_output_folder(output_dir, overwrite=True, flag="--output-dir")
    if overwrite or not folder.is_dir() or not any(folder.iterdir()):
        return
    found = run_kind(folder)
    if found is None:
        entries = sorted(p.name for p in folder.iterdir())
        raise OutputExistsError(
            f"--output-dir {folder} holds files that are not a training run ({', '.join(entries[:4])}); choose "
            "another folder, or pass --overwrite to train into it anyway"
        )
    if found and found != kind:
        raise OutputExistsError(f"--output-dir {folder} holds a {found} training run, not a {kind} one; "
                                "choose another folder or pass --overwrite")  # fmt: skip
    if not resume:
        raise OutputExistsError(
            f"--output-dir {folder} holds a previous {kind} run; pass --resume latest to continue it, or "
            "--overwrite to start a new run over it"
        )


# ---------------------------------------------------------------------------------------------- non-finite guard
class TrainingDivergedError(FloatingPointError):
    """A non-finite loss or gradient (or too many fp16 steps skipped in a row): the run stopped, nothing saved."""


MAX_SKIPPED_STEPS = 20  # fp16 loss-scaling steps skipped in a row before the run counts as diverged


class FiniteGuard:
    """Stops a run at the first non-finite loss or gradient, before the optimizer step that would spread it, so
    nothing after it is saved or pushed. With fp16 loss scaling, overflowing steps are the GradScaler's to skip
    (by design): they are counted, and :data:`MAX_SKIPPED_STEPS` in a row is the same error."""

    def __init__(self, accelerator, checkpoints: Path):
        self.accelerator, self.checkpoints = accelerator, Path(checkpoints)
        self.skipped_in_a_row = self.skipped = 0

    def check(self, step: int, losses: dict[str, torch.Tensor], parameters) -> None:
        """Before ``optimizer.step()`` of optimizer step ``step``: raise if a loss or a gradient is not finite."""
        if self.accelerator.scaler is not None:
            return  # the scaler finds and skips those steps itself; see after_step
        grads = [p.grad for p in parameters if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        device = self.accelerator.device
        values = torch.stack([v.detach().float().reshape(()).to(device) for v in [*losses.values(), norm]])
        bad = (~torch.isfinite(values)).any().float()
        if self.accelerator.reduce(bad, reduction="sum").item() == 0:
            return
        named = ", ".join(f"{k}={v.item()}" for k, v in zip([*losses, "gradient norm"], values, strict=True))
        raise TrainingDivergedError(f"step {step}: non-finite loss or gradient ({named}). {self._stopped()}")

    def after_step(self, step: int, *optimizers) -> None:
        """After the optimizer steps: count the steps the fp16 GradScaler skipped."""
        if self.accelerator.scaler is None:
            return
        if any(getattr(o, "step_was_skipped", False) for o in optimizers):
            self.skipped += 1
            self.skipped_in_a_row += 1
            if self.skipped_in_a_row >= MAX_SKIPPED_STEPS:
                raise TrainingDivergedError(
                    f"step {step}: the fp16 loss scaler skipped {self.skipped_in_a_row} steps in a row (the loss or "
                    f"gradients stay non-finite). {self._stopped()}"
                )
        else:
            self.skipped_in_a_row = 0

    def _stopped(self) -> str:
        from .checkpoint import latest_checkpoint

        last = latest_checkpoint(self.checkpoints)
        where = f"the last good checkpoint is {last}" if last else "no checkpoint was written before it"
        return (
            f"The run stopped and saved nothing after it; {where}. Resume with --resume latest and a lower "
            "--learning-rate (or --max-grad-norm)"
        )
