"""The Hugging Face Hub side of ldm_hub: model cards, upload (:func:`push_pipeline`, :func:`push_component`) and
download (:func:`resolve_folder`, with its errors translated to say which repo, revision or file failed).

What a pushed repo holds besides its weights — ``pipeline.py``, the ``<component>/ldm_hub.py`` loader files and the
``model_index.json`` extras that make it load with plain diffusers too — is the folder format of
:mod:`ldm_hub.convert.pipeline_folder` (its names are re-exported here); this module adds the ``README.md`` model
card (:func:`model_card`), written on every push, from what the pipeline's conditioner says about its mode.

Example:
    >>> from ldm_hub.presets import build_pipeline
    >>> from ldm_hub.hub import model_card
    >>> pipe = build_pipeline("unconditional-tiny")
    >>> card = model_card(pipe, "me/tiny-uncond")
    >>> card.data.pipeline_tag, card.data.library_name
    ('unconditional-image-generation', 'ldm_hub')
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .loading import ModelFileError

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo, ModelCard

    from .pipelines.ldm_pipeline import LDMPipeline

from .convert.pipeline_folder import (  # noqa: F401  (re-exported: the folder format's names, as before)
    COMPONENT_FILE_NAME,
    COMPONENT_SOURCE,
    INFO_KEYS,
    LIBRARY_NAME,
    PIPELINE_CLASS_NAME,
    PIPELINE_FILE_NAME,
    PIPELINE_MODULE,
    PIPELINE_SOURCE,
    VARIANT_DTYPES,
    cast_for_variant,
    clear_tokenizer_call_state,
    read_pipeline_info,
    write_loader_files,
)

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def usage_snippet(pipe: LDMPipeline, repo_id: str) -> str:
    """A Python snippet that loads ``repo_id`` and samples one image in the pipeline's conditioning mode."""
    latent = pipe.unet.config.sample_size
    setup, condition = pipe.conditioner.usage(latent, latent * pipe.vae_scale_factor)
    call = f"{condition}num_inference_steps=50, generator=generator"
    imports = "import PIL.Image\n" if "PIL." in setup else ""
    return (
        f"{imports}import torch\nfrom ldm_hub import LDMPipeline\n\n"
        f'pipe = LDMPipeline.from_pretrained("{repo_id}")\n'
        "generator = torch.Generator().manual_seed(0)\n"
        f"{setup}image = pipe({call}).images[0]\n"
        'image.save("sample.png")\n'
    )


def model_card(pipe: LDMPipeline, repo_id: str, *, license: str = "apache-2.0") -> ModelCard:
    """The repo's README.md as a huggingface_hub ``ModelCard``: metadata, what the model is, how to use it.

    Metadata: ``library_name: ldm_hub``, ``tags`` (diffusers, latent-diffusion, the conditioning mode),
    ``pipeline_tag`` from the conditioner (:attr:`~ldm_hub.conditioning.base.Conditioner.pipeline_tag`),
    ``license``, ``base_model`` (``pipe.base_model``, set when the pipeline was converted from a Hub repo) and
    ``datasets`` (from ``pipe.training_info``).
    """
    from huggingface_hub import ModelCard, ModelCardData

    mode = pipe.conditioning
    training = dict(getattr(pipe, "training_info", None) or {})
    datasets = training.get("datasets") or training.get("dataset")
    if isinstance(datasets, str):
        datasets = [datasets]
    hub_datasets = [d for d in datasets or [] if isinstance(d, str) and _HUB_ID.fullmatch(d)]
    base_model = getattr(pipe, "base_model", None)
    data = ModelCardData(
        library_name=LIBRARY_NAME,
        license=license,
        pipeline_tag=pipe.conditioner.pipeline_tag,
        tags=["diffusers", "latent-diffusion", mode, LIBRARY_NAME],
        base_model=base_model,
        datasets=hub_datasets or None,  # Hub dataset ids only ("shapes:1000" is a local recipe: body only)
    )
    name = repo_id.split("/")[-1]
    parts = [
        (label, component)
        for label, component in (
            ("ε_θ (UNet)", pipe.unet),
            ("E, D (autoencoder)", pipe.vae),
            ("τ_θ (condition encoder)", getattr(pipe, "cond_encoder", None)),
        )
        if isinstance(component, torch.nn.Module)
    ]
    lines = [
        f"# {name}",
        "",
        (
            f"A latent diffusion model ([Rombach et al., CVPR 2022](https://arxiv.org/abs/2112.10752)) for "
            f"**{mode}** generation, made with [ldm_hub](https://pypi.org/project/ldm_hub/): an autoencoder "
            f"({type(pipe.vae).__name__}, f = {pipe.vae_scale_factor}) compresses images to a "
            f"{pipe.latent_channels}-channel latent space in which a UNet ({type(pipe.unet).__name__}) denoises; "
            f"sampling uses {type(pipe.scheduler).__name__}."
        ),
        "",
        "| component | class | parameters |",
        "|---|---|---|",
        *(f"| {label} | {type(c).__name__} | {sum(p.numel() for p in c.parameters()):,} |" for label, c in parts),
        "",
    ]
    if base_model:
        lines += [f"Converted from [{base_model}](https://huggingface.co/{base_model}).", ""]
    if training:
        lines += ["## Training", ""]
        if datasets:
            lines.append("- data: " + ", ".join(f"`{d}`" for d in datasets))
        if "steps" in training:
            lines.append(f"- steps: {training['steps']}")
        for key, value in training.items():
            if key not in ("dataset", "datasets", "steps"):
                lines.append(f"- {key}: {value}")
        lines.append("")
    lines += [
        "## Usage",
        "",
        "```bash",
        "pip install ldm_hub",
        "```",
        "",
        "```python",
        usage_snippet(pipe, repo_id).rstrip(),
        "```",
        "",
        "With plain diffusers (ldm_hub installed), the repo's `pipeline.py` gives the same pipeline:",
        "",
        "```python",
        "from diffusers import DiffusionPipeline",
        "",
        f'pipe = DiffusionPipeline.from_pretrained("{repo_id}", trust_remote_code=True)',
        "```",
        "",
    ]
    content = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)
    return ModelCard(content)


# ---------------------------------------------------------------------------------------------- pushing
def push_pipeline(
    pipe: LDMPipeline,
    repo_id: str,
    *,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    variant: str | None = None,
    safe_serialization: bool = True,
    license: str = "apache-2.0",
) -> CommitInfo:
    """Save ``pipe`` (weights, ``pipeline.py``, loader files, model card) and upload it in one commit.

    The repo is created if needed (``private`` applies then); ``revision`` names a branch (created from
    ``main`` if missing) or a ``refs/pr/N`` to commit to; ``create_pr=True`` opens a pull request instead.
    LFS objects the repo already holds are not uploaded again, and unchanged files are left out of the commit.
    Returns huggingface_hub's ``CommitInfo`` (``.oid`` is the new commit's sha, ``.pr_url`` the PR's).
    """

    def write(folder: str) -> None:
        pipe.save_pretrained(folder, safe_serialization=safe_serialization, variant=variant)

    return _push_folder(
        repo_id, write, lambda repo: model_card(pipe, repo, license=license),
        commit_message=commit_message or f"Upload {type(pipe).__name__}" + (f" ({variant})" if variant else ""),
        commit_description=commit_description, private=private, token=token, revision=revision, create_pr=create_pr,
    )  # fmt: skip


def push_component(
    component,
    repo_id: str,
    *,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    variant: str | None = None,
    safe_serialization: bool = True,
    license: str = "apache-2.0",
) -> CommitInfo:
    """Push one component (a model, scheduler or layout tokenizer) with its model card, like :func:`push_pipeline`.

    ``variant="fp16"`` / ``"bf16"`` writes weights in that dtype under the variant's file name.
    """

    def write(folder: str) -> None:
        kwargs = {}
        if isinstance(component, torch.nn.Module):
            kwargs = {"safe_serialization": safe_serialization, "variant": variant}
        with (
            cast_for_variant(component, variant)
            if isinstance(component, torch.nn.Module)
            else contextlib.nullcontext()
        ):
            component.save_pretrained(folder, **kwargs)

    return _push_folder(
        repo_id, write, lambda repo: component_card(component, repo, license=license),
        commit_message=commit_message or f"Upload {type(component).__name__}" + (f" ({variant})" if variant else ""),
        commit_description=commit_description, private=private, token=token, revision=revision, create_pr=create_pr,
    )  # fmt: skip


def component_card(component, repo_id: str, *, license: str = "apache-2.0") -> ModelCard:
    """README.md for a single component: ``library_name: ldm_hub``, tags, license and a usage snippet that runs."""
    from huggingface_hub import ModelCard, ModelCardData

    cls = type(component).__name__
    data = ModelCardData(
        library_name=LIBRARY_NAME, license=license, tags=["diffusers", "latent-diffusion", LIBRARY_NAME, cls]
    )
    lines = [
        f"# {repo_id.split('/')[-1]}",
        "",
        f"An ldm_hub `{cls}`: a component of a latent diffusion model "
        "([Rombach et al., CVPR 2022](https://arxiv.org/abs/2112.10752)).",
        "",
    ]
    if isinstance(component, torch.nn.Module):
        lines += [f"Parameters: {sum(p.numel() for p in component.parameters()):,}.", ""]
    lines += [
        "## Usage",
        "",
        "```python",
        f"from ldm_hub import {cls}",
        "",
        f'component = {cls}.from_pretrained("{repo_id}")',
        "```",
        "",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def _push_folder(repo_id, write, card, *, commit_message, commit_description, private, token, revision, create_pr):
    """Create the repo (and branch), write the folder and its card in a temp dir, upload it in one commit."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    try:
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if revision is not None and not revision.startswith("refs/pr/"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="ldm_hub-push-") as tmp:
            write(tmp)
            card(repo_id).save(os.path.join(tmp, "README.md"))
            return api.upload_folder(
                repo_id=repo_id, folder_path=tmp, commit_message=commit_message, commit_description=commit_description,
                revision=revision, create_pr=create_pr,
            )  # fmt: skip
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        reason = (
            (
                ": the Hub refused the token (401, invalid or missing credentials); check HF_TOKEN, the token "
                "argument or `hf auth login`"
            )
            if status == 401
            else ""
        )
        e.append_to_message(f"\nldm_hub: pushing to Hub repo {repo_id!r} failed{reason}")
        raise


# ---------------------------------------------------------------------------------------------- download
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def resolve_folder(name_or_path, *, revision=None, cache_dir=None, token=None, local_files_only=None) -> Path:
    """A local folder as is; a Hub repo id downloaded (or read from the cache) with the official client.

    Errors are :class:`~ldm_hub.loading.ModelFileError` naming the repo, the revision and what was missing.
    """
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists() or not _REPO_ID.match(str(name_or_path)):
        raise ModelFileError(f"model folder not found: {name_or_path}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    kwargs = {"revision": revision, "cache_dir": cache_dir, "token": token}
    if local_files_only is not None:
        kwargs["local_files_only"] = local_files_only
    try:
        folder = Path(snapshot_download(str(name_or_path), **kwargs))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as e:
        raise ModelFileError(
            f"{name_or_path!r} is not a local folder; {describe_hub_error(e, str(name_or_path), revision)}"
        ) from None
    if not (folder / "model_index.json").is_file():
        at = f" at revision {revision!r}" if revision else ""
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        raise ModelFileError(
            f"Hub repo {str(name_or_path)!r}{at} has no model_index.json, so it is not a pipeline repo "
            f"(it holds {files[:8]})"
        )
    return folder


@contextlib.contextmanager
def naming_the_repo(hub_id: str | None, revision: str | None) -> Iterator[None]:
    """Prefix a :class:`~ldm_hub.loading.ModelFileError` raised while reading a downloaded repo with its id."""
    try:
        yield
    except ModelFileError as e:
        if hub_id is None:
            raise
        at = f" at revision {revision!r}" if revision else ""
        raise ModelFileError(f"Hub repo {hub_id!r}{at}: {e}") from None


def describe_hub_error(error: Exception, repo_id: str, revision: str | None) -> str:
    """A one-line explanation of a failed Hub download naming the repo and what was missing or refused."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    at = f" at revision {revision!r}" if revision else ""
    if isinstance(error, RevisionNotFoundError):
        return f"revision {revision or 'main'!r} not found in Hub repo {repo_id!r} (no such branch, tag or commit)"
    if isinstance(error, RepositoryNotFoundError):
        return f"Hub repo {repo_id!r} not found (it does not exist, or it is private and your token cannot see it)"
    if isinstance(error, EntryNotFoundError) and not isinstance(error, LocalEntryNotFoundError):
        return f"file missing from Hub repo {repo_id!r}{at}: {error}"
    if isinstance(error, LocalEntryNotFoundError):
        return (
            f"Hub repo {repo_id!r}{at} is not in the local cache and downloading is switched off "
            "(HF_HUB_OFFLINE=1 or local_files_only=True), or the Hub could not be reached"
        )
    if isinstance(error, HfHubHTTPError) and error.response is not None and error.response.status_code == 401:
        return (
            f"the Hub refused the token for {repo_id!r} (401 Unauthorized: invalid credentials); "
            "check HF_TOKEN or `hf auth login`"
        )
    return f"could not fetch Hub repo {repo_id!r}{at}: {type(error).__name__}: {error}"
