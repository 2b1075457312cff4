"""``ldm-hub train autoencoder``: the perceptual compression stage E, D (paper §3.1, App. G).

One optimizer step of the autoencoder, then (from ``disc_start`` on) one of the PatchGAN discriminator:

    x̃ = D(z), z ~ q_E(z|x) (KL) or z = q(E(x)) (VQ)
    L_AE = L1(x, x̃) + w_p·LPIPS(x, x̃) + λ·w_adv·(−D_ψ(x̃)) + L_reg          (see :mod:`.losses`)
    L_D  = hinge(D_ψ(x), D_ψ(sg[x̃]))

The output folder is an autoencoder model folder (``AutoencoderKL.from_pretrained`` / ``VQModel...``) that
``ldm-hub train ldm --autoencoder`` takes.

Example:
    >>> from ldm_hub.training import AutoencoderTrainingConfig, train_autoencoder
    >>> cfg = AutoencoderTrainingConfig(output_dir="ae", dataset="shapes:64", model="kl-f4-tiny",
    ...                                 max_steps=2, batch_size=4, report_to="none", progress_bar=False)
    >>> train_autoencoder(cfg)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import torch
from torch import nn

from ..loading import atomic_directory
from .checkpoint import (
    KILL_AT_STEP,
    checkpoint_step,
    maybe_fault,
    poison_loss,
    resume_checkpoint,
)
from .common import (
    FiniteGuard,
    Progress,
    build_lr_scheduler,
    build_optimizer,
    image_grid,
    make_accelerator,
    make_batch_stream,
    save_samples,
    seed_all,
    seed_per_process,
    tensor_to_pil,
    write_json,
)
from .config import AutoencoderTrainingConfig, config_to_dict
from .data import ImageTransform, RowReader, check_columns, open_dataset
from .losses import (
    PatchDiscriminator,
    adaptive_weight,
    build_perceptual_loss,
    discriminator_loss,
    generator_adversarial_loss,
)
from .presets import AUTOENCODER_PRESETS

AUTOENCODER_CLASSES = ("AutoencoderKL", "VQModel")


def build_autoencoder(spec: str):
    """An autoencoder from a preset name, a JSON config file (with ``_class_name``), or a model folder."""
    import ldm_hub

    if spec in AUTOENCODER_PRESETS:
        class_name, kwargs = AUTOENCODER_PRESETS[spec]
        return getattr(ldm_hub, class_name)(**kwargs)
    path = Path(spec)
    config_file = path / "config.json" if path.is_dir() else path
    if not config_file.is_file():
        raise ValueError(
            f"--model {spec!r} is neither a preset ({sorted(AUTOENCODER_PRESETS)}) nor a config file or model folder"
        )
    config = json.loads(config_file.read_text())
    class_name = config.get("_class_name")
    if class_name not in AUTOENCODER_CLASSES:
        raise ValueError(f"{config_file}: '_class_name' must be one of {AUTOENCODER_CLASSES}, got {class_name!r}")
    cls = getattr(ldm_hub, class_name)
    if path.is_dir():
        return cls.from_pretrained(path)
    return cls.from_config({k: v for k, v in config.items() if not k.startswith("_")})


class AutoencoderWithRegularizer(nn.Module):
    """The module accelerate wraps: x → (x̃, L_reg per image or scalar) in one forward (DDP sees one call)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae
        self.is_vq = hasattr(vae, "quantize")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.is_vq:
            out = self.vae.decode(self.vae.encode(x).latents)
            return out.sample, out.commit_loss  # (B, 3, H, W), scalar
        posterior = self.vae.encode(x).latent_dist
        reconstruction = self.vae.decode(posterior.sample()).sample  # (B, 3, H, W)
        return reconstruction, posterior.kl()  # (B,)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.vae.decoder.conv_out.weight


def train_autoencoder(config: AutoencoderTrainingConfig) -> Path:
    """Train (or resume) an autoencoder as ``config`` says; returns the output folder."""
    output = Path(config.output_dir)
    accelerator = make_accelerator(config)
    device = accelerator.device
    seed_all(config.seed)

    # ---- data
    ds = open_dataset(config)
    check_columns(ds, {"image": config.image_column})
    reader = RowReader(config.image_column, convert_images=config.convert_images)
    transform = ImageTransform(config.resolution, config.crop, config.random_flip, config.seed)
    stream = make_batch_stream(ds, reader, transform, config, accelerator)

    # ---- models and losses
    vae = build_autoencoder(config.model)
    vae.train()
    model = AutoencoderWithRegularizer(vae)
    disc = PatchDiscriminator(vae.config.out_channels, config.disc_channels, config.disc_layers)
    perceptual = build_perceptual_loss(config.lpips_weights, config.perceptual_weight)
    if perceptual is not None:
        perceptual.to(device)
    opt_ae = build_optimizer(model.parameters(), config)
    opt_disc = build_optimizer(disc.parameters(), config, config.disc_learning_rate)
    sched_ae = build_lr_scheduler(opt_ae, config)
    sched_disc = build_lr_scheduler(opt_disc, config, config.max_steps - config.disc_start)  # D starts later
    model, disc, opt_ae, opt_disc = accelerator.prepare(model, disc, opt_ae, opt_disc)
    raw_model, raw_disc = accelerator.unwrap_model(model), accelerator.unwrap_model(disc)

    parts = dict(
        modules={"autoencoder": model, "discriminator": disc},
        optimizers={"autoencoder": opt_ae, "discriminator": opt_disc},
        schedulers={"autoencoder": sched_ae, "discriminator": sched_disc},
        emas={},
    )
    step, extra = 0, {}
    resumed = resume_checkpoint(accelerator, config.resume, output / "checkpoints", **parts)
    if resumed is not None:
        resume, state, data_state = resumed
        step = int(state["step"])
        stream.load_state_dict(data_state or state["data"])
        extra = state.get("extra", {})
        if accelerator.is_main_process:
            print(f"resumed from {resume} at step {step}")
    else:
        seed_per_process(config.seed, accelerator)

    fixed = _sample_batch(ds, reader, config)
    samples_per_step = config.batch_size * accelerator.num_processes * config.gradient_accumulation_steps
    progress = Progress(accelerator, config, step, samples_per_step)
    batches = iter(stream)
    start_time = time.perf_counter()
    seconds_before = float(extra.get("train_seconds", 0.0))  # training time of the runs this one resumes
    is_vq = raw_model.is_vq
    pixels_per_image = None
    guard = FiniteGuard(accelerator, output / "checkpoints")  # a non-finite loss / gradient stops the run

    while step < config.max_steps:
        gan_on = step >= config.disc_start
        logs: dict[str, torch.Tensor] = {}
        pairs = []
        for micro in range(config.gradient_accumulation_steps):
            batch = next(batches)
            x = batch["pixel_values"].to(device)  # (B, 3, H, W)
            pixels_per_image = x[0].numel()
            last = micro == config.gradient_accumulation_steps - 1
            with contextlib.nullcontext() if last else accelerator.no_sync(model):
                reconstruction, reg = model(x)  # (B, 3, H, W)
                l1 = (x - reconstruction).abs().mean()
                rec_loss = config.l1_weight * l1
                if perceptual is not None:
                    p_loss = perceptual(x.float(), reconstruction.float()).mean()
                    rec_loss = rec_loss + config.perceptual_weight * p_loss
                    logs["lpips"] = p_loss.detach()
                if is_vq:
                    reg_loss = config.codebook_weight * reg
                else:  # per-image KL sum over the pixel count: the CompVis ratio to a per-image L1 sum
                    reg_loss = config.kl_weight * reg.mean() / pixels_per_image
                    logs["kl"] = reg.mean().detach()
                loss = poison_loss(rec_loss + reg_loss, step + 1)
                if gan_on:
                    raw_disc.requires_grad_(False)
                    g_loss = generator_adversarial_loss(raw_disc(reconstruction))
                    raw_disc.requires_grad_(True)
                    weight = (
                        adaptive_weight(rec_loss, g_loss, raw_model.last_layer)
                        if config.adaptive_disc_weight
                        else torch.ones((), device=device)
                    )
                    loss = loss + config.disc_weight * weight * g_loss
                    logs["g_loss"], logs["d_weight"] = g_loss.detach(), weight
                accelerator.backward(loss / config.gradient_accumulation_steps)
            pairs.append((x, reconstruction.detach()))
            logs["l1"], logs["loss"] = l1.detach(), loss.detach()
            logs["reg_loss"] = reg_loss.detach()
        if config.max_grad_norm is not None:
            accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        guard.check(step + 1, {"loss": loss}, model.parameters())
        opt_ae.step()
        sched_ae.step()
        opt_ae.zero_grad(set_to_none=True)

        if gan_on:
            for micro, (x, reconstruction) in enumerate(pairs):
                last = micro == len(pairs) - 1
                with contextlib.nullcontext() if last else accelerator.no_sync(disc):
                    logits = disc(torch.cat([x, reconstruction]))  # one DDP call: (2B, 1, h, w)
                    real, fake = logits.chunk(2)
                    d_loss = discriminator_loss(real, fake, config.disc_loss)
                    accelerator.backward(d_loss / len(pairs))
            if config.max_grad_norm is not None:
                accelerator.clip_grad_norm_(disc.parameters(), config.max_grad_norm)
            guard.check(step + 1, {"d_loss": d_loss}, disc.parameters())
            opt_disc.step()
            sched_disc.step()
            opt_disc.zero_grad(set_to_none=True)
            logs["d_loss"] = d_loss.detach()
        guard.after_step(step + 1, opt_ae, *([opt_disc] if gan_on else []))
        step += 1
        with torch.no_grad():
            mse = ((pairs[-1][0] - pairs[-1][1]).float().clamp(-1, 1).pow(2)).mean() / 4.0  # on [0, 1] scale
            logs["psnr"] = -10.0 * torch.log10(mse.clamp_min(1e-10))
        progress.update(step, logs)
        maybe_fault(KILL_AT_STEP, step)

        if step % config.checkpoint_every == 0 or step == config.max_steps:
            extra["train_seconds"] = seconds_before + time.perf_counter() - start_time
            checkpoint_step(accelerator, config, output, step, stream, extra, parts)
        if config.sample_every and step % config.sample_every == 0 and accelerator.is_main_process:
            _write_reconstructions(accelerator, config, raw_model.vae, fixed, step)
    progress.close()
    accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        vae = raw_model.vae
        vae.eval()
        _write_reconstructions(accelerator, config, vae, fixed, step)
        info = {
            "kind": "autoencoder",
            "class": type(vae).__name__,
            "steps": step,
            "samples_seen": step * samples_per_step,
            "seconds_this_run": round(time.perf_counter() - start_time, 1),
            "train_seconds_total": round(seconds_before + time.perf_counter() - start_time, 1),
            "perceptual_loss": "lpips" if perceptual is not None else "none (no LPIPS weights given)",
            "skipped_bad_rows": len(stream.skipped),
            "last_log": progress.history[-1] if progress.history else None,
            "dataset": config.dataset,
        }
        with atomic_directory(output) as tmp:
            vae.save_pretrained(tmp)
            write_json(tmp / "training_info.json", info)
            write_json(tmp / "training_config.json", config_to_dict(config))
        print(f"wrote autoencoder to {output}")
        if config.push_to_hub:
            vae.push_to_hub(config.push_to_hub)
            print(f"pushed to {config.push_to_hub}")
    accelerator.end_training()
    return output


def _sample_batch(ds, reader: RowReader, config) -> torch.Tensor:
    """The first rows of the dataset (centre crop): the fixed images of every reconstruction grid."""
    from .data import collate, without_image_decoding

    transform = ImageTransform(config.resolution, "center", False, config.seed)
    examples = []
    if config.streaming:
        source = ((i, row) for i, row in enumerate(without_image_decoding(ds, [reader.image_column])))
    else:
        plain = without_image_decoding(ds, [reader.image_column])
        source = ((i, plain[i]) for i in range(len(plain)))
    for index, row in source:
        if len(examples) == config.num_sample_images:
            break
        try:
            examples.append(transform(reader(row, index), 0, index))
        except ValueError:
            continue
    return collate(examples)["pixel_values"]


@torch.no_grad()
def _write_reconstructions(accelerator, config, vae, images: torch.Tensor, step: int) -> None:
    was_training = vae.training
    vae.eval()
    x = images.to(accelerator.device, vae.dtype)
    if hasattr(vae, "quantize"):
        reconstruction = vae.decode(vae.encode(x).latents).sample
    else:
        reconstruction = vae.decode(vae.encode(x).latent_dist.mode()).sample
    vae.train(was_training)
    pictures = tensor_to_pil(x) + tensor_to_pil(reconstruction)
    save_samples(accelerator, config, image_grid(pictures, columns=len(x)), step)
