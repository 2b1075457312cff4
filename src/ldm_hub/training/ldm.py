"""``ldm-hub train ldm``: ε_θ (and a new τ_θ) in the latent space of a frozen autoencoder (paper §3.2–3.3).

One optimizer step minimises the paper's Eq. 2 / Eq. 3 on a batch:

    z_0 = s · E(x)                        (KL: a posterior sample; VQ: the pre-quantisation latent)
    t ~ U{0, …, T−1},  ε ~ N(0, I),  z_t = √ᾱ_t z_0 + √(1−ᾱ_t) ε
    L_LDM = ‖ε − ε_θ(z_t, t, τ_θ(y))‖²     y = caption / layout tokens, or [z_t, low-res] channels, or nothing

with y replaced by the empty condition ("" / the all-pad layout) with probability ``cond_dropout`` so that
the model also learns ε_θ(z_t, t, ∅) for classifier-free guidance. s is the autoencoder's ``scaling_factor``,
a given value, or 1/std(z) of the first batch (``scale_by_std``). The weights saved are the EMA weights.

The output folder is an ``LDMPipeline`` (diffusers format) with the autoencoder, ε_θ, τ_θ + tokenizer and a
DDIM sampler on the training noise schedule.

Example:
    >>> from ldm_hub.training import LDMTrainingConfig, train_ldm
    >>> cfg = LDMTrainingConfig(output_dir="t2i", autoencoder="ae", conditioning="text", dataset="shapes:64",
    ...                         model="tiny-text", vocab="captions", max_steps=2, batch_size=4)
    >>> train_ldm(cfg)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..conditioning.base import TrainingSetup
from ..conditioning.modes import conditioner_class, conditioner_for
from ..conditioning.modes.layout import LAYOUT_MAX_OBJECTS  # noqa: F401  (re-exported, as before)
from ..conditioning.modes.superres import IMAGE_CHANNELS  # noqa: F401
from ..conditioning.modes.text import BERT_SPECIAL_TOKENS  # noqa: F401
from ..loading import read_json
from ..models.denoiser import Denoiser
from ..models.first_stage import downsampling_factor, encode_moments, sample_latents  # noqa: F401
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
    trainable_parameters,
    write_json,
)
from .config import LDMTrainingConfig, config_to_dict
from .data import (
    BatchStream,
    ImageTransform,
    RowReader,
    caption_vocabulary,
    check_columns,
    collate,
    column_names,
    fit_layout_planner,
    open_dataset,
)
from .ema import ExponentialMovingAverage
from .presets import LDM_PRESETS, NOISE_SCHEDULE, SAMPLER_CONFIG, encoder_preset_for


# ---------------------------------------------------------------------------------------------- components
def load_frozen_autoencoder(spec: str):
    """The first stage from an autoencoder folder (ours or diffusers') or a pipeline folder's ``vae``."""
    from ..convert.diffusers_format import COMPONENT_RENAMES, load_component

    folder = Path(spec)
    if (folder / "model_index.json").is_file():
        index = read_json(folder / "model_index.json")
        for name, entry in index.items():
            if COMPONENT_RENAMES.get(name, name) == "vae" and isinstance(entry, list):
                return load_component(folder / name, entry[0], entry[1])
        raise ValueError(f"{folder} is a pipeline without an autoencoder (vae / vqvae)")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(f"--autoencoder {spec}: not an autoencoder or pipeline folder (no config.json)")
    config = read_json(config_file)
    library = "diffusers" if "down_block_types" in config else "ldm_hub"
    return load_component(folder, library, str(config.get("_class_name")))


def _unet_kwargs(spec: str) -> dict:
    if spec in LDM_PRESETS:
        return dict(LDM_PRESETS[spec])
    path = Path(spec)
    if path.is_file():
        return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}
    raise ValueError(
        f"--model {spec!r} is neither a preset ({sorted(LDM_PRESETS)}), an LDMUNet config file, nor a pipeline folder"
    )


# ---------------------------------------------------------------------------------------------- latents
# What the latent cache keeps beside E(x): captions and layouts as lists, the others as tensors.
CACHED_CONDITIONS = ("caption", "layout", "low_res", "segmentation")


def _compact(value):
    """Segmentation ids fit a byte (a 64×64 map: 4 KB instead of 32 KB per row in the cache)."""
    if isinstance(value, torch.Tensor) and value.dtype == torch.int64 and int(value.max()) < 256:
        return value.to(torch.uint8)
    return value


class LatentCache:
    """E(x) of every row (centre crop), computed once (each process a share) and kept in memory and on disk."""

    def __init__(self, stream: BatchStream, vae, accelerator, folder: Path, key: str, batch_size: int):
        self.stream = stream
        path = folder / f"latents-{key}.pt"
        rows = stream.rows
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            mine = rows[accelerator.process_index :: accelerator.num_processes]
            tensors, extras = [], []
            with torch.no_grad():
                for start in range(0, len(mine), batch_size):
                    indices = mine[start : start + batch_size]
                    examples = [stream.transform(stream.reader(stream.ds[int(i)], int(i)), 0, int(i)) for i in indices]
                    batch = collate(examples)
                    x = batch["pixel_values"].to(accelerator.device, vae.dtype)
                    tensors.append(encode_moments(vae, x).float().cpu())
                    extras += [{k: _compact(e[k]) for k in CACHED_CONDITIONS if k in e} for e in examples]
            torch.save(
                {"rows": torch.as_tensor(mine), "moments": torch.cat(tensors), "extras": extras},
                folder / f".part-{key}-{accelerator.process_index}.pt",
            )
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                parts = [
                    torch.load(folder / f".part-{key}-{r}.pt", weights_only=True)
                    for r in range(accelerator.num_processes)
                ]
                order = torch.cat([p["rows"] for p in parts])
                moments = torch.cat([p["moments"] for p in parts])
                extras = [e for p in parts for e in p["extras"]]
                torch.save({"rows": order, "moments": moments, "extras": extras}, folder / f".tmp-{key}.pt")
                (folder / f".tmp-{key}.pt").replace(path)
                for r in range(accelerator.num_processes):
                    (folder / f".part-{key}-{r}.pt").unlink()
            accelerator.wait_for_everyone()
        data = torch.load(path, weights_only=True)
        self.position = {int(r): i for i, r in enumerate(data["rows"])}
        self.moments = data["moments"]
        self.extras = data["extras"]

    def batch(self, indices: torch.Tensor) -> dict:
        where = [self.position[int(i)] for i in indices]
        out: dict = {"moments": self.moments[where], "index": indices}
        first = self.extras[where[0]]
        for key in CACHED_CONDITIONS:
            if key in first:
                values = [self.extras[w][key] for w in where]
                out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
        if "segmentation" in out:
            out["segmentation"] = out["segmentation"].long()  # kept as uint8 in the cache
        return out


class _CachedStream:
    """The batch order of a :class:`BatchStream`, served from a :class:`LatentCache` (no image decoding)."""

    def __init__(self, stream: BatchStream, cache: LatentCache):
        self.stream, self.cache = stream, cache

    def __iter__(self):
        for keys in self.stream._batch_keys():
            indices = torch.tensor([k[1] for k in keys])
            self.stream.epoch, self.stream.position = keys[0][2:]
            yield self.cache.batch(indices)


def _cache_key(config: LDMTrainingConfig, ds, vae) -> str:
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            [
                config.dataset,
                config.dataset_config_name,
                config.split,
                config.resolution,
                config.image_column,
                config.low_res_column,
                config.conditioning,
                config.convert_images,
                config.skip_bad_rows,
            ]
        ).encode()
    )
    if config.degradation != "bicubic":  # (the key of a bicubic run stays what it was before the option)
        digest.update(f"degradation={config.degradation}".encode())
    digest.update(str(getattr(ds, "_fingerprint", "")).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes()[:4096])
    return digest.hexdigest()[:16]


def low_res_degradation(name: str, low_res_size: int | None):
    """The :class:`ImageTransform` degradation for ``--degradation NAME``: None for 'bicubic' (the low_res column,
    else PIL's bicubic resize, exactly as before the option existed)."""
    from ..data.degradations import make_degradation

    if name == "bicubic":
        return None
    if low_res_size is None:
        raise ValueError(
            f"--degradation {name} applies to a model that takes a low-res image (--conditioning superres)"
        )
    return make_degradation(name)


# ---------------------------------------------------------------------------------------------- training
def train_ldm(config: LDMTrainingConfig) -> Path:
    """Train (or resume) a latent diffusion model as ``config`` says; returns the output (pipeline) folder."""
    from ..pipelines.ldm_pipeline import LDMPipeline
    from ..schedulers import DDPMScheduler

    output = Path(config.output_dir)
    accelerator = make_accelerator(config)
    device = accelerator.device
    seed_all(config.seed)
    mode = config.conditioning
    conditioner_cls = conditioner_class(mode)

    # ---- data and models: the conditioner builds its side (τ_θ, tokenizer, extra UNet inputs) and names its columns
    ds = open_dataset(config)
    fine_tune = bool(config.model) and (Path(config.model) / "model_index.json").is_file()
    base = LDMPipeline.from_pretrained(config.model) if fine_tune else None
    vae = load_frozen_autoencoder(config.autoencoder) if config.autoencoder else base.vae
    vae.requires_grad_(False).eval().to(device)
    latent_channels = vae.config.latent_channels
    factor = downsampling_factor(vae)
    if config.resolution % factor:
        raise ValueError(f"resolution {config.resolution} is not a multiple of the autoencoder factor {factor}")
    unet_preset = config.model or conditioner_cls.training_unet_preset
    from ..conditioning.text import default_bert_vocab

    setup = TrainingSetup(
        config=config, dataset=ds, output=output, factor=factor, encoder_kwargs=encoder_preset_for(unet_preset),
        column_names=column_names(ds), caption_vocabulary=lambda column: caption_vocabulary(ds, column),
        fit_layout_planner=lambda column, labels: fit_layout_planner(ds, column, labels),
        bert_vocab=default_bert_vocab,
    )  # fmt: skip
    data = conditioner_cls.training_data(setup)
    check_columns(ds, {"image": config.image_column, **data.columns})
    if fine_tune:
        parts = data
        unet, parts.cond_encoder, parts.tokenizer = base.unet, base.cond_encoder, base.tokenizer
        if base.conditioning != conditioner_cls.mode:
            raise ValueError(f"--model {config.model} is a {base.conditioning!r} pipeline, not {mode!r}")
        from ..conditioning.text import LDMBertModel

        parts.train_encoder = isinstance(parts.cond_encoder, LDMBertModel) or config.train_text_encoder
        parts.layout_planner = base.layout_planner
        if parts.segmentation_categories is not None and parts.layout_planner is None:
            parts.layout_planner = fit_layout_planner(ds, config.layout_column, parts.segmentation_categories)
        noise_schedule = {k: base.scheduler.config[k] for k in NOISE_SCHEDULE}
    else:
        parts = conditioner_cls.build_for_training(setup)
        from ..models.unet import LDMUNet

        kwargs = _unet_kwargs(unet_preset)
        kwargs.update(
            in_channels=latent_channels + parts.concat_channels, out_channels=latent_channels,
            sample_size=config.resolution // factor, cross_attention_dim=parts.cross_attention_dim,
        )  # fmt: skip
        unet = LDMUNet(**kwargs)
        noise_schedule = dict(NOISE_SCHEDULE)
    tokenizer, cond_encoder, train_encoder, planner = (
        parts.tokenizer, parts.cond_encoder, parts.train_encoder, parts.layout_planner,
    )  # fmt: skip
    unet.train()
    if cond_encoder is not None:
        if train_encoder:
            cond_encoder.requires_grad_(True).train()
        else:
            cond_encoder.requires_grad_(False).eval().to(device)
    model = Denoiser(unet, cond_encoder if train_encoder else None)
    frozen_encoder = cond_encoder if (cond_encoder is not None and not train_encoder) else None
    # The conditioner over the training components: what a batch's y becomes (dropped to ∅ for guidance).
    conditioner = conditioner_for(vae, unet, cond_encoder, tokenizer)
    noise_scheduler = DDPMScheduler(**noise_schedule)
    num_train_timesteps = noise_scheduler.config.num_train_timesteps

    columns = parts.columns
    reader = RowReader(
        config.image_column, convert_images=config.convert_images,
        **{f"{key}_column": column for key, column in columns.items()},
        segmentation_categories=parts.segmentation_categories,
    )  # fmt: skip
    low_res_size = config.resolution // factor if "low_res" in columns else None
    transform = ImageTransform(
        config.resolution, config.crop, config.random_flip, config.seed, low_res_size,
        degradation=low_res_degradation(config.degradation, low_res_size),
    )  # fmt: skip
    stream = make_batch_stream(ds, reader, transform, config, accelerator)
    sample_inputs = _sample_inputs(stream, config)

    optimizer = build_optimizer(model.parameters(), config)
    lr_scheduler = build_lr_scheduler(optimizer, config)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw = accelerator.unwrap_model(model)
    ema = None
    if config.ema_decay > 0:
        ema = ExponentialMovingAverage(trainable_parameters(raw), config.ema_decay, config.ema_warmup).to(device)

    parts = dict(
        modules={"denoiser": model},
        optimizers={"denoiser": optimizer},
        schedulers={"denoiser": lr_scheduler},
        emas={"denoiser": ema} if ema is not None else {},
    )
    step, extra = 0, {}
    resumed = resume_checkpoint(accelerator, config.resume, output / "checkpoints", **parts)
    if resumed is not None:
        resume, state, data_state = resumed
        step, extra = int(state["step"]), state.get("extra", {})
        stream.load_state_dict(data_state or state["data"])
        if accelerator.is_main_process:
            print(f"resumed from {resume} at step {step}")
    else:
        seed_per_process(config.seed, accelerator)

    batches: object = stream
    if config.cache_latents:
        folder = Path(config.latent_cache_dir) if config.latent_cache_dir else output / "latent-cache"
        cache = LatentCache(stream, vae, accelerator, folder, _cache_key(config, ds, vae), config.batch_size)
        batches = _CachedStream(stream, cache)
    batches = iter(batches)

    scale = extra.get("scaling_factor")
    if scale is None and not config.scale_by_std:
        scale = config.scaling_factor if config.scaling_factor is not None else float(vae.config.scaling_factor)
    samples_per_step = config.batch_size * accelerator.num_processes * config.gradient_accumulation_steps
    progress = Progress(accelerator, config, step, samples_per_step)
    start_time = time.perf_counter()
    seconds_before = float(extra.get("train_seconds", 0.0))  # training time of the runs this one resumes
    guard = FiniteGuard(accelerator, output / "checkpoints")  # a non-finite loss / gradient stops the run

    def latents_of(batch) -> torch.Tensor:
        if "moments" in batch:
            return sample_latents(vae, batch["moments"].to(device))
        x = batch["pixel_values"].to(device, vae.dtype)
        with torch.no_grad(), accelerator.autocast():
            return sample_latents(vae, encode_moments(vae, x)).float()  # (B, c, h, w)

    while step < config.max_steps:
        logs: dict[str, torch.Tensor] = {}
        for micro in range(config.gradient_accumulation_steps):
            batch = next(batches)
            z = latents_of(batch)
            if scale is None:  # scale_by_std: s = 1 / std(z) over the first global batch
                mean = accelerator.reduce(z.mean(), reduction="mean")
                square = accelerator.reduce(z.pow(2).mean(), reduction="mean")
                scale = float(1.0 / (square - mean**2).sqrt())
                extra["scaling_factor"] = scale
                if accelerator.is_main_process:
                    print(f"scale_by_std: scaling_factor = {scale:.5f}")
            z0 = scale * z  # (B, c, h, w)
            noise = torch.randn_like(z0)
            t = torch.randint(0, num_train_timesteps, (z0.shape[0],), device=device)
            z_t = noise_scheduler.add_noise(z0, noise, t)  # √ᾱ_t z_0 + √(1−ᾱ_t) ε
            drop = torch.rand(z0.shape[0]) < config.cond_dropout  # (B,): y → ∅ for guidance
            inputs = conditioner.training_inputs(
                batch, drop, train_encoder=train_encoder, device=device, autocast=accelerator.autocast
            )
            last = micro == config.gradient_accumulation_steps - 1
            with contextlib.nullcontext() if last else accelerator.no_sync(model):
                prediction = model(z_t, t, **inputs)  # ε̂ (B, c, h, w)
                loss = poison_loss(F.mse_loss(prediction.float(), noise.float()), step + 1)
                accelerator.backward(loss / config.gradient_accumulation_steps)
            logs["loss"] = loss.detach()
        if config.max_grad_norm is not None:
            logs["grad_norm"] = accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        guard.check(step + 1, {"loss": loss}, model.parameters())
        optimizer.step()
        guard.after_step(step + 1, optimizer)
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(trainable_parameters(raw))
        step += 1
        logs["lr"] = lr_scheduler.get_last_lr()[0]
        progress.update(step, logs)
        maybe_fault(KILL_AT_STEP, step)

        if step % config.checkpoint_every == 0 or step == config.max_steps:
            extra["train_seconds"] = seconds_before + time.perf_counter() - start_time
            checkpoint_step(accelerator, config, output, step, stream, extra, parts)
        if config.sample_every and step % config.sample_every == 0 and accelerator.is_main_process:
            pipe = _pipeline(raw, ema, vae, tokenizer, frozen_encoder, noise_schedule, scale, planner)
            _write_samples(accelerator, config, pipe, sample_inputs, step)
    progress.close()
    accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        if scale is None:
            scale = float(vae.config.scaling_factor)
        pipe = _pipeline(raw, ema, vae, tokenizer, frozen_encoder, noise_schedule, scale, planner)
        _write_samples(accelerator, config, pipe, sample_inputs, step)
        info = {
            "kind": "ldm",
            "conditioning": mode,
            "steps": step,
            "samples_seen": step * samples_per_step,
            "seconds_this_run": round(time.perf_counter() - start_time, 1),
            "train_seconds_total": round(seconds_before + time.perf_counter() - start_time, 1),
            "scaling_factor": scale,
            "ema": config.ema_decay > 0,
            "dataset": config.dataset,
            "skipped_bad_rows": len(stream.skipped),
            "last_log": progress.history[-1] if progress.history else None,
            "parameters": {
                "unet": sum(p.numel() for p in pipe.unet.parameters()),
                "cond_encoder": sum(p.numel() for p in pipe.cond_encoder.parameters())
                if pipe.cond_encoder is not None
                else 0,
            },
        }
        pipe.training_info = info
        pipe.save_pretrained(output)
        write_json(output / "training_info.json", info)
        write_json(output / "training_config.json", config_to_dict(config))
        print(f"wrote {mode} pipeline to {output}")
        if config.push_to_hub:
            pipe.push_to_hub(config.push_to_hub)
            print(f"pushed to {config.push_to_hub}")
    accelerator.end_training()
    return output


def _pipeline(raw: Denoiser, ema, vae, tokenizer, frozen_encoder, noise_schedule, scale, planner=None):
    """An LDMPipeline with the EMA weights (copies; the training modules are untouched)."""
    from ..pipelines.ldm_pipeline import LDMPipeline
    from ..schedulers import DDIMScheduler

    denoiser = Denoiser(_clone(raw.unet), _clone(raw.cond_encoder) if raw.cond_encoder is not None else None)
    if ema is not None:
        ema.copy_to(trainable_parameters(denoiser))
    denoiser.eval()
    vae.register_to_config(scaling_factor=float(scale))  # the frozen first stage itself: training reads `scale`
    scheduler = DDIMScheduler(**{**SAMPLER_CONFIG, **noise_schedule})
    encoder = denoiser.cond_encoder if denoiser.cond_encoder is not None else frozen_encoder
    return LDMPipeline(
        vae=vae,
        unet=denoiser.unet,
        scheduler=scheduler,
        cond_encoder=encoder,
        tokenizer=tokenizer,
        layout_planner=planner,
    )


def _clone(module: nn.Module) -> nn.Module:
    """A copy rebuilt from the config and the state dict (copy.deepcopy fails on modules holding packed
    oneDNN weights)."""
    from diffusers.configuration_utils import ConfigMixin

    if isinstance(module, ConfigMixin):
        clone = type(module).from_config(module.config)
    else:  # a transformers model
        clone = type(module)(module.config)
    clone.load_state_dict(module.state_dict())
    parameter = next(module.parameters(), None)
    return clone.to(parameter.device) if parameter is not None else clone


def _sample_inputs(stream: BatchStream, config: LDMTrainingConfig) -> dict:
    """The first usable rows: the prompts / layouts / low-res images of every sample grid."""
    examples = []
    if stream.streaming:
        source = enumerate(stream.ds)
    else:
        source = ((int(i), stream.ds[int(i)]) for i in stream.rows[: config.num_sample_images * 4])
    for index, row in source:
        if len(examples) == config.num_sample_images:
            break
        try:
            examples.append(stream.transform(stream.reader(row, index), 0, index))
        except ValueError:
            continue
    return collate(examples)


@torch.no_grad()
def _write_samples(accelerator, config: LDMTrainingConfig, pipe, inputs: dict, step: int) -> None:
    pipe.set_progress_bar_config(disable=True)
    pipe.to(accelerator.device)
    n = len(inputs["index"])
    generator = [torch.Generator(device="cpu").manual_seed(config.seed + i) for i in range(n)]
    kwargs = dict(num_inference_steps=config.sample_steps, generator=generator, output_type="pt")
    conditioner = pipe.conditioner
    kwargs.update(conditioner.sample_kwargs(inputs))  # the rows' y; image i draws from seed + i
    if conditioner.guidance_supported:
        kwargs["guidance_scale"] = config.sample_guidance_scale
    images = pipe(**kwargs).images * 2 - 1  # (n, 3, H, W) in [-1, 1]
    rows = tensor_to_pil(images)
    if conditioner.inputs:  # the condition's source images first
        rows = tensor_to_pil(inputs["pixel_values"]) + rows
    save_samples(accelerator, config, image_grid(rows, columns=n), step)
