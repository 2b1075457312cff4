"""The Hub round trip for real: the official huggingface_hub client (and diffusers' and datasets' Hub code)
against the Hub-protocol test server of tests/hub_server.py, started per module by tests/hub_fixtures.py.

Push then load is bit-identical; revisions by branch, tag, sha and PR; the fp16 variant; no re-upload of
unchanged LFS objects; an interrupted push changes nothing and a retry works; errors name the repo and what
was missing; plain diffusers gets ldm_hub's pipeline from the repo's pipeline.py; model cards; the CLI; a dataset
pushed with datasets trains through `ldm-hub train` from its repo id."""

from __future__ import annotations

import base64
import copy
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from hub_fixtures import OTHER_TOKEN, TOKEN, USER, go_offline, hub_env, running_hub
from utils import max_abs_diff, randomize_

import ldm_hub
from ldm_hub import LDMPipeline
from ldm_hub.hub import COMPONENT_FILE_NAME, PIPELINE_FILE_NAME, PIPELINE_SOURCE
from ldm_hub.loading import ModelFileError
from ldm_hub.presets import build_pipeline

REPO_ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a red circle and a blue square"


# ---------------------------------------------------------------------------------------------- helpers
def tiny(preset: str, seed: int = 0) -> LDMPipeline:
    """A tiny pipeline with EVERY parameter random (so a wrong or missing tensor cannot hide)."""
    pipe = build_pipeline(preset, seed=seed)
    for i, name in enumerate(("unet", "vae", "cond_encoder")):
        module = getattr(pipe, name, None)
        if module is not None:
            randomize_(module, seed=100 * seed + i)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load(repo: str, **kwargs) -> LDMPipeline:
    pipe = LDMPipeline.from_pretrained(repo, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample(pipe, seed: int = 0) -> torch.Tensor:
    """Two sampling steps in the pipeline's mode, as a (B, 3, H, W) tensor in [0, 1]."""
    kwargs = dict(num_inference_steps=2, generator=torch.Generator().manual_seed(seed), output_type="pt")
    mode, size = pipe.conditioning, pipe.unet.config.sample_size
    pixels = size * pipe.vae_scale_factor
    rng = np.random.default_rng(1)
    if mode == "text":
        kwargs.update(prompt=PROMPT, guidance_scale=2.0)
    elif mode == "superres":
        kwargs["image"] = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    elif mode == "layout":
        kwargs.update(layout=[{"label": "red circle", "box": [0.1, 0.2, 0.5, 0.6]}], guidance_scale=2.0)
    elif mode == "class":
        kwargs.update(class_labels=[3], guidance_scale=2.0)
    elif mode == "semantic":
        kwargs["segmentation"] = torch.from_numpy(rng.integers(0, 6, (1, pixels, pixels)))
    elif mode == "inpaint":
        mask = np.zeros((pixels, pixels), np.uint8)
        mask[pixels // 4 : 3 * pixels // 4, pixels // 4 : 3 * pixels // 4] = 255
        kwargs.update(
            image=PIL.Image.fromarray(rng.integers(0, 256, (pixels, pixels, 3), dtype=np.uint8)),
            mask_image=PIL.Image.fromarray(mask),
        )
    return pipe(**kwargs).images


def assert_same_weights(a: LDMPipeline, b: LDMPipeline) -> None:
    for name in ("unet", "vae", "cond_encoder"):
        ma, mb = getattr(a, name), getattr(b, name)
        if ma is None:
            assert mb is None
            continue
        sa, sb = ma.state_dict(), mb.state_dict()
        assert sa.keys() == sb.keys(), name
        for key in sa:
            assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), f"{name}.{key}"
    assert public(a.scheduler.config) == public(b.scheduler.config)
    if hasattr(a.tokenizer, "get_vocab"):
        assert a.tokenizer.get_vocab() == b.tokenizer.get_vocab()
    elif a.tokenizer is not None:  # a ConfigMixin tokenizer (layout boxes)
        assert type(a.tokenizer) is type(b.tokenizer) and public(a.tokenizer.config) == public(b.tokenizer.config)


def public(config) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def api():
    from huggingface_hub import HfApi

    return HfApi()


def raw(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """A plain urllib request to the server: (status, headers, body)."""
    request = urllib.request.Request(server.url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The Hub-protocol test server, with every Hub client of this process pointed at it (tests/hub_fixtures.py)."""
    with running_hub(tmp_path_factory.mktemp("hub")) as server:
        yield server


@pytest.fixture(scope="module")
def text_pipe():
    return tiny("text2im-tiny")


@pytest.fixture(scope="module")
def text_repo(hub, text_pipe):
    """text2im-tiny pushed to tester/text2im-tiny; returns (repo_id, commit sha)."""
    info = text_pipe.push_to_hub(f"{USER}/text2im-tiny", commit_message="first push")
    return f"{USER}/text2im-tiny", info.oid


# ---------------------------------------------------------------------------------------------- the server itself
def test_server_speaks_the_hub_protocol(hub, tmp_path):
    """Repos, 409 on an existing repo, regular vs LFS uploads, commits with shas, refs, tree / paths-info,
    Range, typed errors, 401 on a bad token, atomic commits — through the official client where it can."""
    from huggingface_hub import CommitOperationAdd, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    a = api()
    assert a.whoami()["name"] == USER
    from huggingface_hub import ModelCard

    ModelCard("---\nlicense: mit\ntags: [a]\n---\n# card\n").validate()  # POST /api/validate-yaml
    bad = json.dumps({"repoType": "model", "content": "---\ntags: not-a-list\n---\n"}).encode()
    assert raw(hub, "POST", "/api/validate-yaml", bad, {"Content-Type": "application/json"})[0] == 400
    repo = a.create_repo("protocol").repo_id
    assert repo == f"{USER}/protocol"
    with pytest.raises(HfHubHTTPError) as err:
        a.create_repo("protocol")
    assert err.value.response.status_code == 409
    assert a.create_repo("protocol", exist_ok=True).repo_id == repo

    weights = np.random.default_rng(0).bytes(3000)
    hub.reset_counters()
    commit = a.create_commit(
        repo,
        [CommitOperationAdd("notes.txt", b"hello\n"), CommitOperationAdd("w/model.safetensors", weights)],
        commit_message="files",
    )
    assert re.fullmatch(r"[0-9a-f]{40}", commit.oid) and hub.lfs_puts == 1  # only the .safetensors is LFS
    files = {f.path: f for f in a.list_repo_tree(repo, recursive=True) if hasattr(f, "size")}
    assert files["w/model.safetensors"].lfs is not None and files["notes.txt"].lfs is None
    assert [c.title for c in a.list_repo_commits(repo)] == ["files", "initial commit"]
    assert a.model_info(repo).sha == commit.oid == hub.head(repo)

    a.create_tag(repo, tag="v1")
    a.create_branch(repo, branch="dev")
    refs = a.list_repo_refs(repo)
    assert {b.name for b in refs.branches} == {"main", "dev"} and [t.name for t in refs.tags] == ["v1"]
    assert all(r.target_commit == commit.oid for r in [*refs.branches, *refs.tags])
    assert {p.path for p in a.get_paths_info(repo, ["notes.txt", "w", "missing"])} == {"notes.txt", "w"}
    with pytest.raises(EntryNotFoundError):
        list(a.list_repo_tree(repo, path_in_repo="no-such-folder"))

    path = hf_hub_download(repo, "w/model.safetensors", revision="v1", cache_dir=tmp_path)
    assert Path(path).read_bytes() == weights
    status, headers, body = raw(
        hub, "GET", f"/{repo}/resolve/{commit.oid}/w/model.safetensors", headers={"Range": "bytes=10-19"}
    )
    assert status == 206 and body == weights[10:20] and headers["X-Linked-Size"] == str(len(weights))
    assert (
        headers["X-Repo-Commit"] == commit.oid
        and headers["X-Linked-Etag"].strip('"') == files["w/model.safetensors"].lfs.sha256
    )

    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(f"{USER}/nope", "x.txt", cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo, "notes.txt", revision="nope", cache_dir=tmp_path)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo, "nope.txt", cache_dir=tmp_path)
    for status_headers in (raw(hub, "GET", f"/api/models/{USER}/nope"), raw(hub, "HEAD", f"/{repo}/resolve/x/a")):
        assert status_headers[0] == 404 and status_headers[1]["X-Error-Code"] in ("RepoNotFound", "RevisionNotFound")

    # a bad token is refused for writes (401), and a private repo is invisible to other users
    with pytest.raises(HfHubHTTPError) as err:
        a.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo, token="hf_wrong")
    assert err.value.response.status_code == 401
    assert "Invalid credentials" in err.value.response.headers["X-Error-Message"]
    a.create_repo("secret", private=True)
    with pytest.raises(RepositoryNotFoundError):
        a.model_info(f"{USER}/secret", token=OTHER_TOKEN)

    # atomic commit: a commit naming an LFS object that was never uploaded is refused and changes nothing
    lines = [
        {"key": "header", "value": {"summary": "bad"}},
        {
            "key": "file",
            "value": {"path": "new.txt", "content": base64.b64encode(b"x").decode(), "encoding": "base64"},
        },
        {"key": "lfsFile", "value": {"path": "big.bin", "algo": "sha256", "oid": "0" * 64, "size": 5}},
    ]
    status, _, body = raw(
        hub,
        "POST",
        f"/api/models/{repo}/commit/main",
        b"".join(json.dumps(x).encode() + b"\n" for x in lines),
        {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-ndjson"},
    )
    assert status == 422 and b"never uploaded" in body
    assert hub.head(repo) == commit.oid and "new.txt" not in {s.rfilename for s in a.model_info(repo).siblings}


# ---------------------------------------------------------------------------------------------- round trips
def test_pipeline_round_trip_is_bit_identical(hub, text_pipe, text_repo, tmp_path):
    repo, _ = text_repo
    files = {s.rfilename for s in api().model_info(repo).siblings}
    for name in (
        "model_index.json",
        PIPELINE_FILE_NAME,
        "README.md",
        "unet/diffusion_pytorch_model.safetensors",
        f"unet/{COMPONENT_FILE_NAME}",
        "tokenizer/tokenizer_config.json",
    ):
        assert name in files
    back = load(repo, cache_dir=tmp_path / "cache")
    assert type(back) is LDMPipeline and back.conditioning == "text"
    assert_same_weights(text_pipe, back)
    ours, theirs = sample(text_pipe), sample(back)
    print(f"push/load image max abs diff: {max_abs_diff(ours, theirs):.3g}")
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize(
    "preset, tag", [("superres-tiny", "image-to-image"), ("unconditional-tiny", "unconditional-image-generation")]
)
def test_superres_and_unconditional_round_trip_and_card_snippet(hub, preset, tag, tmp_path, monkeypatch):
    from huggingface_hub import ModelCard

    pipe = tiny(preset, seed=3)
    repo = pipe.push_to_hub(f"{USER}/{preset}").repo_url.repo_id
    back = load(repo, cache_dir=tmp_path / "cache")
    assert_same_weights(pipe, back)
    assert torch.equal(sample(pipe), sample(back))
    card = ModelCard.load(repo)
    assert card.data.pipeline_tag == tag and card.data.library_name == "ldm_hub"
    assert {"diffusers", "latent-diffusion", pipe.conditioning} <= set(card.data.tags)
    _run_card_snippet(card, monkeypatch, tmp_path)


def mode_pipe(mode: str) -> LDMPipeline:
    """A tiny pipeline in one of the other conditioning modes, from the public classes, every parameter random."""

    def unet(in_channels, context=None):
        return randomize_(
            ldm_hub.LDMUNet(
                in_channels=in_channels,
                out_channels=3,
                sample_size=8,
                block_out_channels=(32, 64),
                layers_per_block=1,
                attention_levels=(False, True),
                num_attention_heads=None,
                attention_head_dim=16,
                norm_num_groups=8,
                cross_attention_dim=context,
            ),
            1,
        ).eval()

    if mode == "layout":
        tokenizer = ldm_hub.LayoutTokenizer(vocab_size=1024, max_objects=4, categories=["red circle", "blue square"])
        encoder = ldm_hub.LDMBertModel(
            vocab_size=1024,
            max_position_embeddings=tokenizer.sequence_length,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            attention_head_dim=16,
            intermediate_size=64,
        )
        parts = dict(unet=unet(3, 32), cond_encoder=encoder, tokenizer=tokenizer)
    elif mode == "class":
        parts = dict(unet=unet(3, 32), cond_encoder=ldm_hub.ClassEmbedder(num_classes=11, embed_dim=32, null_class=10))
    elif mode == "semantic":
        parts = dict(unet=unet(6), cond_encoder=ldm_hub.SemanticMapEncoder(num_classes=6))
    else:  # inpaint: z_t (3) + E(masked image) (3) + mask (1)
        parts = dict(unet=unet(7))
    if parts.get("cond_encoder") is not None:
        randomize_(parts["cond_encoder"], 2).eval()
    vae = randomize_(
        ldm_hub.VQModel(
            block_out_channels=(32, 64, 64),
            layers_per_block=1,
            latent_channels=3,
            num_vq_embeddings=64,
            norm_num_groups=8,
            sample_size=32,
        ),
        0,
    ).eval()
    scheduler = ldm_hub.DDIMScheduler(
        beta_start=0.0015,
        beta_end=0.0205,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = LDMPipeline(vae=vae, scheduler=scheduler, **parts)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.conditioning == mode
    return pipe


@pytest.mark.parametrize(
    "mode, tag",
    [
        ("layout", "text-to-image"),
        ("class", "unconditional-image-generation"),
        ("semantic", "image-to-image"),
        ("inpaint", "image-to-image"),
    ],
)
def test_other_modes_round_trip_and_load_in_plain_diffusers(hub, mode, tag, tmp_path, monkeypatch):
    """Layout (a ConfigMixin tokenizer: diffusers loads it through the custom-component file), class, semantic
    map, inpainting: push, load with ldm_hub and with plain diffusers, same weights and images; card snippet."""
    from diffusers import DiffusionPipeline
    from huggingface_hub import ModelCard

    pipe = mode_pipe(mode)
    repo = pipe.push_to_hub(f"{USER}/mode-{mode}").repo_url.repo_id
    expected = sample(pipe)
    for loaded in (
        load(repo, cache_dir=tmp_path / "a"),
        DiffusionPipeline.from_pretrained(repo, trust_remote_code=True, disable_mmap=True, cache_dir=tmp_path / "b"),
    ):
        loaded.set_progress_bar_config(disable=True)
        assert type(loaded) is LDMPipeline and loaded.conditioning == mode
        assert_same_weights(pipe, loaded)
        assert torch.equal(sample(loaded), expected)
    card = ModelCard.load(repo)
    assert card.data.pipeline_tag == tag and mode in card.data.tags
    _run_card_snippet(card, monkeypatch, tmp_path, steps=2)


def _run_card_snippet(card, monkeypatch, tmp_path, steps: int | None = None) -> None:
    """Execute the card's first Python block as written (it loads from the server and writes sample.png);
    ``steps`` shortens the 50 sampling steps."""
    code = re.search(r"```python\n(.*?)```", card.content, re.DOTALL)[1]
    assert "LDMPipeline.from_pretrained(" in code and "num_inference_steps=50" in code
    if steps is not None:
        code = code.replace("num_inference_steps=50", f"num_inference_steps={steps}")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert PIL.Image.open(tmp_path / "sample.png").size[0] > 0


def test_model_card(hub, text_pipe, text_repo, tmp_path, monkeypatch):
    from huggingface_hub import ModelCard

    repo, _ = text_repo
    card = ModelCard.load(repo)
    data = card.data
    assert data.library_name == "ldm_hub" and data.pipeline_tag == "text-to-image"
    assert data.license == "apache-2.0" and {"diffusers", "latent-diffusion", "text"} <= set(data.tags)
    assert data.base_model is None and "## Training" not in card.content
    info = api().model_info(repo)  # the server reads the card's metadata, as the Hub does
    assert info.library_name == "ldm_hub" and info.pipeline_tag == "text-to-image"
    _run_card_snippet(card, monkeypatch, tmp_path)

    # training info (as `ldm-hub train` attaches it) and a base model reach the card and survive a reload
    trained = copy.copy(text_pipe)
    trained.training_info = {"dataset": f"{USER}/shapes", "steps": 1234, "batch_size": 8}
    trained.base_model = "CompVis/ldm-text2im-large-256"
    repo2 = trained.push_to_hub(f"{USER}/trained", license="mit").repo_url.repo_id
    card = ModelCard.load(repo2)
    assert card.data.datasets == [f"{USER}/shapes"] and card.data.license == "mit"
    assert card.data.base_model == "CompVis/ldm-text2im-large-256"
    assert "- steps: 1234" in card.content and "- batch_size: 8" in card.content
    again = load(repo2, cache_dir=tmp_path / "cache")
    assert again.training_info == trained.training_info and again.base_model == trained.base_model


def test_diffusers_format_repo_from_the_hub_gets_base_model(hub, tmp_path):
    """A diffusers-format LDM repo loaded from the Hub is converted; the conversion records base_model."""
    from diffusers_repos import celeba_pipeline

    theirs = celeba_pipeline()
    theirs.push_to_hub(f"{USER}/diffusers-celeba")
    ours = load(f"{USER}/diffusers-celeba", cache_dir=tmp_path / "cache")
    assert ours.base_model == f"{USER}/diffusers-celeba" and ours.conditioning == "unconditional"
    repo = ours.push_to_hub(f"{USER}/converted-celeba").repo_url.repo_id
    from huggingface_hub import ModelCard

    assert ModelCard.load(repo).data.base_model == f"{USER}/diffusers-celeba"


# ---------------------------------------------------------------------------------------------- plain diffusers
def test_plain_diffusers_loads_ldm_hub_pipeline(hub, text_pipe, text_repo, tmp_path):
    """trust_remote_code=True and custom_pipeline=repo both give ldm_hub.LDMPipeline, never diffusers' own
    unconditional LDMPipeline, and the same image as ldm_hub.LDMPipeline.from_pretrained(repo)."""
    import diffusers
    from diffusers import DiffusionPipeline

    repo, _ = text_repo
    ours = load(repo, cache_dir=tmp_path / "ours")
    expected = sample(ours)
    for i, kwargs in enumerate(
        [
            dict(trust_remote_code=True),
            dict(custom_pipeline=repo, trust_remote_code=True),
            dict(trust_remote_code=True, disable_mmap=True),
        ]
    ):
        pipe = DiffusionPipeline.from_pretrained(repo, cache_dir=tmp_path / f"d{i}", **kwargs)
        pipe.set_progress_bar_config(disable=True)
        assert type(pipe) is ldm_hub.LDMPipeline and type(pipe) is not diffusers.LDMPipeline
        assert {k: type(v).__name__ for k, v in pipe.components.items()} == {
            "vae": "AutoencoderKL",
            "unet": "LDMUNet",
            "scheduler": "DDIMScheduler",
            "cond_encoder": "LDMBertModel",
            "tokenizer": "BertTokenizer",
            "layout_planner": "NoneType",
        }
        assert all(
            type(v).__module__.startswith(("ldm_hub.", "transformers."))
            for v in pipe.components.values()
            if v is not None
        )
        assert_same_weights(ours, pipe)
        image = sample(pipe)
        diff = max_abs_diff(image, expected)
        print(f"diffusers {kwargs}: image max abs diff {diff:.3g}")
        # diffusers memory-maps the safetensors (weights at unaligned addresses, so oneDNN picks other
        # kernels: ~1e-6); loaded without mmap it is bit-identical
        if kwargs.get("disable_mmap"):
            assert torch.equal(image, expected)
        torch.testing.assert_close(image, expected, rtol=1e-4, atol=1e-5)
        as_uint8 = [np.asarray(ours.numpy_to_pil(x.permute(0, 2, 3, 1).numpy())[0]) for x in (image, expected)]
        assert np.abs(as_uint8[0].astype(int) - as_uint8[1]).max() <= 1

    # without trust_remote_code diffusers refuses clearly instead of building its own LDMPipeline
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        DiffusionPipeline.from_pretrained(repo, cache_dir=tmp_path / "refused")
    # a component passed to diffusers' loader is checked against ldm_hub's (lazily served) base classes
    scheduler = ldm_hub.DPMSolverMultistepScheduler.from_config(ours.scheduler.config)
    pipe = DiffusionPipeline.from_pretrained(
        repo, trust_remote_code=True, scheduler=scheduler, cache_dir=tmp_path / "d0"
    )
    assert pipe.scheduler is scheduler and "ModelMixin" not in ldm_hub.__all__


def test_pipeline_file_is_the_packaged_one(hub, text_repo, tmp_path):
    """pipelines/ldm_hub_pipeline/pipeline.py == the text shipped in the package == the uploaded file; it holds
    exactly one pipeline class, which is ldm_hub.LDMPipeline (also loadable as a local custom_pipeline)."""
    from diffusers import DiffusionPipeline
    from diffusers.utils.dynamic_modules_utils import find_pipeline_class
    from huggingface_hub import hf_hub_download

    top_level = REPO_ROOT / "pipelines" / "ldm_hub_pipeline" / PIPELINE_FILE_NAME
    assert top_level.read_text(encoding="utf-8") == PIPELINE_SOURCE
    repo, _ = text_repo
    assert Path(hf_hub_download(repo, PIPELINE_FILE_NAME, cache_dir=tmp_path)).read_text() == PIPELINE_SOURCE
    namespace: dict = {}
    exec(compile(PIPELINE_SOURCE, "pipeline.py", "exec"), namespace)
    module = type(sys)("pipeline")
    module.__dict__.update(namespace)
    assert find_pipeline_class(module) is ldm_hub.LDMPipeline
    pipe = DiffusionPipeline.from_pretrained(
        repo, custom_pipeline=str(top_level.parent), trust_remote_code=True, cache_dir=tmp_path / "local"
    )
    assert type(pipe) is ldm_hub.LDMPipeline


# ---------------------------------------------------------------------------------------------- revisions
def test_revisions_tag_sha_branch_and_pr(hub, tmp_path):
    a = api()
    repo = f"{USER}/revisions"
    v1, v2, v3, v4 = (tiny("unconditional-tiny", seed=s) for s in (11, 12, 13, 14))
    sha1 = v1.push_to_hub(repo, commit_message="v1").oid
    a.create_tag(repo, tag="v1")
    sha2 = v2.push_to_hub(repo, commit_message="v2").oid
    assert sha2 != sha1 and hub.head(repo) == sha2
    cache = tmp_path / "cache"
    assert_same_weights(load(repo, cache_dir=cache), v2)
    assert_same_weights(load(repo, revision="v1", cache_dir=cache), v1)
    assert_same_weights(load(repo, revision=sha1, cache_dir=cache), v1)
    # a branch: created from main, main untouched
    sha3 = v3.push_to_hub(repo, revision="dev", commit_message="v3 on dev").oid
    assert hub.head(repo) == sha2 and hub.head(repo, "dev") == sha3
    assert_same_weights(load(repo, revision="dev", cache_dir=cache), v3)
    # a pull request: refs/pr/1, main untouched
    pr = v4.push_to_hub(repo, create_pr=True, commit_message="v4 as a PR")
    assert pr.pr_revision == "refs/pr/1" and pr.pr_url.endswith("/discussions/1") and hub.head(repo) == sha2
    assert_same_weights(load(repo, revision="refs/pr/1", cache_dir=cache), v4)
    assert [c.title for c in a.list_repo_commits(repo)][:2] == ["v2", "v1"]


def test_fp16_variant(hub, text_pipe, tmp_path):
    from huggingface_hub import hf_hub_download
    from safetensors import safe_open

    repo = f"{USER}/variants"
    before = {k: v.clone() for k, v in text_pipe.unet.state_dict().items()}
    text_pipe.push_to_hub(repo)
    text_pipe.push_to_hub(repo, variant="fp16")
    assert all(torch.equal(before[k], v) and v.dtype == torch.float32 for k, v in text_pipe.unet.state_dict().items())
    files = {s.rfilename for s in api().model_info(repo).siblings}
    assert {
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "cond_encoder/diffusion_pytorch_model.fp16.safetensors",
    } <= files
    path = hf_hub_download(repo, "vae/diffusion_pytorch_model.fp16.safetensors", cache_dir=tmp_path)
    with safe_open(path, "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}

    half = load(repo, variant="fp16", torch_dtype=torch.float16, cache_dir=tmp_path / "cache")
    for name in ("unet", "vae", "cond_encoder"):
        for key, value in getattr(text_pipe, name).state_dict().items():
            loaded = getattr(half, name).state_dict()[key]
            assert loaded.dtype == (torch.float16 if value.is_floating_point() else value.dtype)
            assert torch.equal(loaded, value.half() if value.is_floating_point() else value), f"{name}.{key}"
    full = load(repo, cache_dir=tmp_path / "cache")
    assert_same_weights(text_pipe, full)

    # save_pretrained(variant="fp16") writes fp16 weights locally too
    text_pipe.save_pretrained(tmp_path / "local", variant="fp16")
    with safe_open(tmp_path / "local" / "unet" / "diffusion_pytorch_model.fp16.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    # and plain diffusers picks the variant as well
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(
        repo, variant="fp16", torch_dtype=torch.float16, trust_remote_code=True, cache_dir=tmp_path / "diffusers"
    )
    assert type(pipe) is LDMPipeline and pipe.unet.dtype == torch.float16
    assert torch.equal(pipe.unet.state_dict()["conv_in.weight"], before["conv_in.weight"].half())


# ---------------------------------------------------------------------------------------------- uploads
def test_unchanged_push_uploads_nothing(hub, text_pipe):
    from huggingface_hub import CommitOperationAdd, hf_hub_download

    repo = f"{USER}/dedup"
    hub.reset_counters()
    head = text_pipe.push_to_hub(repo).oid
    assert hub.lfs_puts == 3  # unet, vae, cond_encoder weights
    hub.reset_counters()
    again = text_pipe.push_to_hub(repo)
    assert hub.lfs_puts == 0 and again.oid == head == hub.head(repo)  # nothing changed: no commit either
    # the LFS batch API is content-addressed: the same bytes under a new path need no upload either
    weights = Path(hf_hub_download(repo, "unet/diffusion_pytorch_model.safetensors")).read_bytes()
    commit = api().create_commit(repo, [CommitOperationAdd("copy/unet.safetensors", weights)], commit_message="copy")
    assert hub.lfs_puts == 0 and commit.oid != head
    assert Path(hf_hub_download(repo, "copy/unet.safetensors")).read_bytes() == weights
    # a changed UNet uploads exactly one object
    changed = tiny("text2im-tiny")  # the same weights as text_pipe ...
    assert_same_weights(changed, text_pipe)
    with torch.no_grad():  # ... but one UNet tensor
        changed.unet.conv_in.bias.add_(1.0)
    changed.push_to_hub(repo)
    assert hub.lfs_puts == 1


def test_interrupted_push_changes_nothing_and_a_retry_succeeds(hub, monkeypatch, tmp_path):
    """The server drops the connection in the middle of LFS PUTs (after letting the first one through, and on
    every client retry): the push fails, the head commit is unchanged; the retry uploads only what is missing."""
    from huggingface_hub import lfs
    from huggingface_hub.utils import http_backoff

    monkeypatch.setattr(lfs, "http_backoff", functools.partial(http_backoff, base_wait_time=0.01, max_wait_time=0.02))
    repo = f"{USER}/interrupted"
    first, second = tiny("text2im-tiny", seed=21), tiny("text2im-tiny", seed=22)
    head = first.push_to_hub(repo).oid
    hub.reset_counters()
    hub.kill_lfs_uploads(after=1)
    with pytest.raises(Exception) as err:  # the client gives up after its retries: a network error
        second.push_to_hub(repo, commit_message="interrupted")
    print(f"interrupted push raised {type(err.value).__name__}: {str(err.value)[:120]}")
    assert hub.killed_puts >= 2 and hub.lfs_puts == 1
    assert hub.head(repo) == head and next(c.title for c in api().list_repo_commits(repo)) != "interrupted"
    assert_same_weights(load(repo, cache_dir=tmp_path / "a"), first)

    hub.reset_counters()
    retry = second.push_to_hub(repo, commit_message="retry")
    assert hub.lfs_puts == 2  # 3 LFS weights files, one already stored by the interrupted push
    assert retry.oid != head and hub.head(repo) == retry.oid
    assert_same_weights(load(repo, cache_dir=tmp_path / "b"), second)


# ---------------------------------------------------------------------------------------------- errors
def test_errors_name_the_repo_and_what_is_missing(hub, text_pipe, text_repo, tmp_path, monkeypatch):
    from huggingface_hub.errors import HfHubHTTPError

    repo, _ = text_repo
    cache = tmp_path / "cache"
    with pytest.raises(ModelFileError, match=rf"Hub repo '{USER}/no-such-model' not found"):
        load(f"{USER}/no-such-model", cache_dir=cache)
    with pytest.raises(ModelFileError, match=rf"revision 'no-such-branch' not found in Hub repo '{repo}'"):
        load(repo, revision="no-such-branch", cache_dir=cache)
    with pytest.raises(ModelFileError, match=rf"the Hub refused the token for '{repo}' \(401"):
        load(repo, token="hf_wrong", cache_dir=cache)
    with pytest.raises(
        HfHubHTTPError,
        match=rf"(?s)Invalid credentials.*pushing to Hub repo '{USER}/x' failed: "
        r"the Hub refused the token",
    ):
        text_pipe.push_to_hub(f"{USER}/x", token="hf_wrong")

    # a missing file: the UNet weights deleted from a copy of the repo
    broken = f"{USER}/broken"
    text_pipe.push_to_hub(broken)
    api().delete_file("unet/diffusion_pytorch_model.safetensors", broken)
    with pytest.raises(
        ModelFileError,
        match=rf"(?s)Hub repo '{broken}': missing weights in .*unet: none of "
        r"\['diffusion_pytorch_model.safetensors'",
    ):
        load(broken, cache_dir=cache)
    api().delete_file("model_index.json", broken)
    with pytest.raises(ModelFileError, match=rf"Hub repo '{broken}' has no model_index.json"):
        load(broken, cache_dir=cache)
    # a file missing for the requested variant
    with pytest.raises(ModelFileError, match=rf"(?s)Hub repo '{repo}': missing weights .*fp16"):
        load(repo, variant="fp16", cache_dir=cache)
    # offline with a cold cache
    go_offline(monkeypatch)
    with pytest.raises(ModelFileError, match=rf"Hub repo '{repo}' is not in the local cache .*HF_HUB_OFFLINE"):
        load(repo, cache_dir=tmp_path / "cold")


def test_offline_with_a_warm_cache_makes_no_request(hub, text_pipe, text_repo, tmp_path, monkeypatch):
    repo, _ = text_repo
    cache = tmp_path / "cache"
    load(repo, cache_dir=cache)
    go_offline(monkeypatch)
    before = len(hub.requests)
    again = load(repo, cache_dir=cache)
    assert len(hub.requests) == before
    assert_same_weights(text_pipe, again)
    monkeypatch.delenv("HF_HUB_OFFLINE")  # local_files_only=True is the per-call switch
    assert load(repo, cache_dir=cache, local_files_only=True) is not None and len(hub.requests) == before


# ---------------------------------------------------------------------------------------------- components
def test_every_component_pushes_and_loads(hub, text_pipe, tmp_path):
    """Each model, the scheduler and the tokenizers on their own, through ldm_hub's push_to_hub (HubMixin)."""
    from transformers import BertTokenizer

    sr = tiny("superres-tiny", seed=5)
    models = {"unet": text_pipe.unet, "kl": text_pipe.vae, "vq": sr.vae, "bert": text_pipe.cond_encoder}
    for name, model in models.items():
        info = model.push_to_hub(f"{USER}/component-{name}", commit_message=f"{name} weights", private=True)
        back = type(model).from_pretrained(
            f"{USER}/component-{name}", revision=info.commit_url.rsplit("/", 1)[-1], cache_dir=tmp_path
        )
        assert type(back) is type(model)
        a, b = model.state_dict(), back.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    # ldm_hub's own push: its model card, a branch revision, and an fp16 variant cast on the way out
    unet = text_pipe.unet
    unet.push_to_hub(f"{USER}/component-unet", variant="fp16", revision="half")
    assert unet.dtype == torch.float32  # the in-memory model is untouched
    back = ldm_hub.LDMUNet.from_pretrained(
        f"{USER}/component-unet", revision="half", variant="fp16", torch_dtype=torch.float16, cache_dir=tmp_path
    )
    assert all(torch.equal(v.half(), back.state_dict()[k]) for k, v in unet.state_dict().items())
    from huggingface_hub import ModelCard

    card = ModelCard.load(f"{USER}/component-unet")
    assert card.data.library_name == "ldm_hub" and "LDMUNet" in card.data.tags
    assert 'LDMUNet.from_pretrained("' in card.text
    changed = copy.deepcopy(unet)  # (an unchanged upload is no commit, so no PR: change the weights)
    with torch.no_grad():
        changed.conv_out.bias.add_(1.0)
    changed.push_to_hub(f"{USER}/component-unet", create_pr=True)
    pr = ldm_hub.LDMUNet.from_pretrained(f"{USER}/component-unet", revision="refs/pr/1", cache_dir=tmp_path)
    assert all(torch.equal(v, pr.state_dict()[k]) for k, v in changed.state_dict().items())

    text_pipe.scheduler.push_to_hub(f"{USER}/component-scheduler")
    scheduler = ldm_hub.DDIMScheduler.from_pretrained(f"{USER}/component-scheduler", cache_dir=tmp_path)
    assert public(scheduler.config) == public(text_pipe.scheduler.config)
    text_pipe.tokenizer.push_to_hub(f"{USER}/component-tokenizer")
    tokenizer = BertTokenizer.from_pretrained(f"{USER}/component-tokenizer", cache_dir=tmp_path)
    assert tokenizer.get_vocab() == text_pipe.tokenizer.get_vocab()
    layout = ldm_hub.LayoutTokenizer(categories=["red circle", "blue square"])
    layout.push_to_hub(f"{USER}/component-layout-tokenizer", commit_message="layout vocabulary")
    back_layout = ldm_hub.LayoutTokenizer.from_pretrained(f"{USER}/component-layout-tokenizer", cache_dir=tmp_path)
    assert back_layout.categories == layout.categories
    assert ModelCard.load(f"{USER}/component-scheduler").data.library_name == "ldm_hub"
    # component-level errors come from diffusers and name the repo and file
    with pytest.raises(OSError, match=rf"{USER}/component-scheduler.*(diffusion_pytorch_model|config.json)"):
        ldm_hub.LDMUNet.from_pretrained(f"{USER}/component-scheduler", cache_dir=tmp_path)


# ---------------------------------------------------------------------------------------------- the CLI
def _ldm_hub(*args, env):
    exe = shutil.which("ldm-hub", path=os.path.dirname(sys.executable))
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=600, env=env, check=False)


def test_cli_push(hub, text_pipe, tmp_path, capsys):
    """`ldm-hub push FOLDER REPO_ID` through the installed console script (a subprocess with HF_ENDPOINT /
    HF_TOKEN set), then its errors in-process."""
    from ldm_hub.cli import main

    folder = tmp_path / "folder"
    text_pipe.save_pretrained(folder)
    env = hub_env(hub, tmp_path / "home")
    proc = _ldm_hub(
        "push", folder, f"{USER}/from-cli", "--commit-message", "from the CLI", "--revision", "cli", env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(rf"pushed .* \(text model\) to {USER}/from-cli at commit [0-9a-f]{{40}}", proc.stdout)
    assert hub.head(f"{USER}/from-cli", "cli") != hub.head(f"{USER}/from-cli", "main")
    assert next(c.title for c in api().list_repo_commits(f"{USER}/from-cli", revision="cli")) == "from the CLI"
    assert_same_weights(text_pipe, load(f"{USER}/from-cli", revision="cli", cache_dir=tmp_path / "cache"))

    assert main(["push", str(folder), f"{USER}/from-cli", "--create-pr"]) == 0
    assert f"pull request: {hub.url}/{USER}/from-cli/discussions/1 (revision refs/pr/1)" in capsys.readouterr().out
    assert main(["push", str(folder), f"{USER}/from-cli", "--token", "hf_wrong"]) == 2
    err = capsys.readouterr().err
    assert f"ldm-hub push: error: pushing {folder} to Hub repo '{USER}/from-cli' failed" in err
    assert "Invalid credentials" in err and "the Hub refused the token" in err
    assert main(["push", str(tmp_path / "nope"), f"{USER}/x"]) == 2
    assert "ldm-hub push: error: model folder not found" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- datasets
def test_dataset_push_load_and_train_from_the_repo_id(hub, tmp_path):
    """A dataset pushed with datasets.push_to_hub loads back with load_dataset(repo_id), and `ldm-hub train`
    (autoencoder, then an LDM, one step each) trains from that repo id and pushes the result with its card."""
    import datasets
    from huggingface_hub import ModelCard

    from ldm_hub.cli import main
    from ldm_hub.data.shapes import make_shapes_dataset

    shapes = make_shapes_dataset(8, 0)
    shapes.push_to_hub(f"{USER}/shapes")
    back = datasets.load_dataset(f"{USER}/shapes", split="train", cache_dir=str(tmp_path / "ds"))
    assert back.num_rows == 8 and back.column_names == shapes.column_names
    assert back[3]["caption"] == shapes[3]["caption"]
    assert np.array_equal(np.asarray(back[3]["image"]), np.asarray(shapes[3]["image"]))

    common = [
        "--dataset",
        f"{USER}/shapes",
        "--max-steps",
        "1",
        "--batch-size",
        "2",
        "--report-to",
        "none",
        "--no-progress-bar",
        "--num-sample-images",
        "1",
    ]
    assert main(["train", "autoencoder", "--model", "kl-f4-tiny", "--output-dir", str(tmp_path / "ae"), *common]) == 0
    assert (
        main(
            [
                "train",
                "ldm",
                "--conditioning",
                "unconditional",
                "--model",
                "tiny-unconditional",
                "--autoencoder",
                str(tmp_path / "ae"),
                "--output-dir",
                str(tmp_path / "ldm"),
                "--sample-steps",
                "1",
                "--push-to-hub",
                f"{USER}/shapes-ldm",
                *common,
            ]
        )
        == 0
    )
    card = ModelCard.load(f"{USER}/shapes-ldm")
    assert card.data.datasets == [f"{USER}/shapes"] and "- steps: 1" in card.content
    pipe = load(f"{USER}/shapes-ldm", cache_dir=tmp_path / "cache")
    assert pipe.conditioning == "unconditional" and pipe.training_info["dataset"] == f"{USER}/shapes"


# ---------------------------------------------------------------------------------------------- from a wheel
@pytest.mark.slow
@pytest.mark.ci  # issue 5: the wheel-installed push is part of what CI proves
def test_push_from_an_installed_wheel_uploads_the_pipeline_file(hub, tmp_path):
    """A non-editable wheel in a fresh venv: `ldm-hub push` uploads the same pipeline.py as pipelines/ holds
    (its text ships inside the package as ldm_hub.hub.PIPELINE_SOURCE, not read from the source tree)."""
    from huggingface_hub import hf_hub_download
    from utils import install_wheel

    venv = install_wheel(REPO_ROOT, tmp_path)
    py = venv / "bin" / "python"
    env = hub_env(hub, tmp_path / "home")
    where = subprocess.check_output(
        [py, "-c", "import ldm_hub.hub; print(ldm_hub.hub.__file__)"], text=True, cwd=tmp_path, env=env
    ).strip()
    assert where.startswith(str(venv)), where
    cli = venv / "bin" / "ldm-hub"
    subprocess.run(
        [cli, "init", "unconditional-tiny", "--output", tmp_path / "model"],
        check=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    proc = subprocess.run(
        [cli, "push", tmp_path / "model", f"{USER}/from-wheel"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    uploaded = Path(hf_hub_download(f"{USER}/from-wheel", PIPELINE_FILE_NAME, cache_dir=tmp_path / "cache"))
    assert uploaded.read_text() == (REPO_ROOT / "pipelines" / "ldm_hub_pipeline" / PIPELINE_FILE_NAME).read_text()
