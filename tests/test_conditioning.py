"""Condition encoders and inputs: LayoutTokenizer (box tokens), ClassEmbedder, SemanticMapEncoder.

Oracles: the CompVis ``ClassEmbedder`` from stable-diffusion-sdkit (imported with a stub ``open_clip``); for the
box tokens and the spatial rescaler, whose originals are not in the PyPI packages (taming's
``ObjectsBoundingBoxConditionalBuilder``, CompVis' ``SpatialRescaler``), references written here from the
original source's semantics, plus hand-computed token values.
"""

from __future__ import annotations

import json
import math
import random

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from utils import max_abs_diff, randomize_

import ldm_hub
from ldm_hub import ClassEmbedder, LayoutTokenizer, SemanticMapEncoder
from ldm_hub.convert.diffusers_format import load_component
from ldm_hub.loading import ModelFileError


def public(config) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_")}


CATEGORIES = [
    "red circle",
    "blue square",
    "green triangle",
    "yellow star",
    "purple hexagon",
    "sky",
    "tree",
    "cat",
    "dog",
    "house",
]


# ---------------------------------------------------------------- LayoutTokenizer
class TamingBoxBuilder:
    """taming's ObjectsBoundingBoxConditionalBuilder.build for the whole-image crop, no flip, no shuffle, no
    modifiers, written from its source: boxes as (x0, y0, w, h), coordinates tokenised as
    ``int(round(y·(S−1)))·S + int(round(x·(S−1)))`` with S = int(sqrt(no_tokens)), none = no_tokens − 1."""

    def __init__(self, no_tokens, no_max_objects, encode_crop):
        self.no_tokens, self.no_max_objects, self.encode_crop = no_tokens, no_max_objects, encode_crop
        self.no_sections = int(math.sqrt(no_tokens))

    def tokenize_coordinates(self, x, y):
        return int(round(y * (self.no_sections - 1))) * self.no_sections + int(round(x * (self.no_sections - 1)))

    def token_pair_from_bbox(self, bbox):
        return self.tokenize_coordinates(bbox[0], bbox[1]), self.tokenize_coordinates(
            bbox[0] + bbox[2], bbox[1] + bbox[3]
        )

    def build(self, annotations):  # [(category_no, (x0, y0, w, h)), ...]
        none = self.no_tokens - 1
        triples = [(c, *self.token_pair_from_bbox(b)) for c, b in annotations]
        triples += [(none, none, none)] * (self.no_max_objects - len(triples))
        extra = list(self.token_pair_from_bbox((0.0, 0.0, 1.0, 1.0))) if self.encode_crop else []
        return [t for triple in triples for t in triple] + extra


def random_layout(rng: random.Random, n: int, names=True):
    layout = []
    for _ in range(n):
        x0, x1 = sorted(rng.uniform(0, 1) for _ in range(2))
        y0, y1 = sorted(rng.uniform(0, 1) for _ in range(2))
        label = rng.choice(CATEGORIES) if names else rng.randrange(len(CATEGORIES))
        layout.append({"label": label, "box": [x0, y0, x1, y1]})
    return layout


@pytest.mark.parametrize("vocab_size,max_objects,encode_crop", [(8192, 30, True), (8192, 30, False), (1024, 5, True)])
def test_layout_tokens_match_taming_builder(vocab_size, max_objects, encode_crop):
    tok = LayoutTokenizer(
        vocab_size=vocab_size, max_objects=max_objects, encode_crop=encode_crop, categories=CATEGORIES
    )
    reference = TamingBoxBuilder(vocab_size, max_objects, encode_crop)
    rng = random.Random(0)
    layouts = [random_layout(rng, n) for n in (0, 1, 3, max_objects)]
    ids = tok(layouts)
    assert ids.dtype == torch.long and ids.shape == (4, 3 * max_objects + 2 * encode_crop) == (4, tok.sequence_length)
    for row, layout in zip(ids.tolist(), layouts):
        annotations = [
            (
                CATEGORIES.index(o["label"]),
                (o["box"][0], o["box"][1], o["box"][2] - o["box"][0], o["box"][3] - o["box"][1]),
            )
            for o in layout
        ]
        assert row == reference.build(annotations)


def test_layout_token_values_by_hand():
    tok = LayoutTokenizer(categories=CATEGORIES)  # the layout2img-openimages256 sizes
    assert (tok.grid_size, tok.pad_token_id, tok.sequence_length, tok.num_classes) == (90, 8191, 92, 10)
    ids = tok([{"label": "blue square", "box": [0.25, 0.5, 1.0, 0.75]}, {"label": 7, "box": [0, 0, 1, 1]}])
    # 0.25·89 = 22.25 → 22, 0.5·89 = 44.5 → 44 (Python rounds half to even, as taming), 0.75·89 = 66.75 → 67
    assert ids[0, :6].tolist() == [1, 44 * 90 + 22, 67 * 90 + 89, 7, 0, 89 * 90 + 89]
    assert (ids[0, 6:90] == 8191).all() and ids[0, 90:].tolist() == [0, 8099]
    assert tok.unconditional(3).shape == (3, 92) and (tok.unconditional(3) == 8191).all()
    assert tok.coordinates(44 * 90 + 22) == (22 / 89, 44 / 89)


def test_layout_single_layout_batch_and_decode_round_trip():
    tok = LayoutTokenizer(vocab_size=1024, max_objects=4, categories=CATEGORIES)  # grid 32
    on_grid = [{"label": "tree", "box": [3 / 31, 0.0, 20 / 31, 1.0]}, {"label": 2, "box": [0.0, 5 / 31, 1.0, 6 / 31]}]
    single = tok(on_grid)  # one layout is a batch of one
    assert single.shape == (1, 14) and torch.equal(single, tok([on_grid]))
    (decoded,) = tok.decode(single)
    assert [o["label"] for o in decoded] == ["tree", "green triangle"]
    for got, want in zip(decoded, on_grid):
        assert got["box"] == pytest.approx(want["box"])
    assert tok([[]]).tolist()[0][:12] == [1023] * 12  # an empty layout: all objects padded


def test_layout_ids_only_tokenizer():
    """A converted OpenImages model: no names, ids below the pad token."""
    tok = LayoutTokenizer(categories=None)
    assert tok.categories is None and tok.num_classes == 8191
    assert tok([{"label": 600, "box": [0.1, 0.1, 0.2, 0.2]}])[0, 0] == 600
    with pytest.raises(ValueError, match=r"label 'cat' is a name, but this tokenizer has no category names"):
        tok([{"label": "cat", "box": [0.1, 0.1, 0.2, 0.2]}])
    limited = LayoutTokenizer(categories=None, num_classes=601)
    with pytest.raises(ValueError, match=r"category id 601 is out of range \[0, 601\)"):
        limited([{"label": 601, "box": [0.1, 0.1, 0.2, 0.2]}])


def test_layout_tokenizer_save_load(tmp_path):
    tok = LayoutTokenizer(vocab_size=1024, max_objects=7, categories=CATEGORIES, num_classes=12)
    tok.save_pretrained(tmp_path / "tok")
    saved = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    assert saved["_class_name"] == "LayoutTokenizer" and saved["categories"] == CATEGORIES
    again = LayoutTokenizer.from_pretrained(tmp_path / "tok")
    assert public(again.config) == public(tok.config) and again.categories == CATEGORIES and again.num_classes == 12
    layout = random_layout(random.Random(1), 5)
    assert torch.equal(again(layout), tok(layout))
    # the pipeline's component loader reads it through the same method
    loaded = load_component(tmp_path / "tok", "ldm_hub", "LayoutTokenizer")
    assert isinstance(loaded, LayoutTokenizer) and loaded.categories == CATEGORIES
    (tmp_path / "tok" / "tokenizer_config.json").write_text('{"_class_name": "LayoutTokenizer", "max_objects": 0}')
    with pytest.raises(
        ModelFileError, match=r"tokenizer_config.json is not a valid LayoutTokenizer config.*max_objects"
    ):
        load_component(tmp_path / "tok", "ldm_hub", "LayoutTokenizer")


BOX = [0.1, 0.2, 0.3, 0.4]


@pytest.mark.parametrize(
    "layout,message",
    [
        (
            [{"label": 0, "box": BOX}, {"label": 1, "box": [0.5, 0.5, 1.2, 0.9]}],
            r"layout 0, object 1: box \[0.5, 0.5, 1.2, 0.9\] is outside \[0, 1\]",
        ),
        ([{"label": 0, "box": [-0.1, 0.0, 0.5, 0.5]}], r"object 0: box \[-0.1, 0.0, 0.5, 0.5\] is outside \[0, 1\]"),
        ([{"label": 0, "box": [0.6, 0.1, 0.2, 0.5]}], r"object 0: box \[0.6, 0.1, 0.2, 0.5\] has x1 < x0 or y1 < y0"),
        ([{"label": 0, "box": [0.1, 0.6, 0.2, 0.5]}], r"box \[0.1, 0.6, 0.2, 0.5\] has x1 < x0 or y1 < y0"),
        ([{"label": 0, "box": [0.1, 0.2, 0.1, 0.5]}], r"zero width or height"),
        ([{"label": 0, "box": [0.1, 0.2, 0.3]}], r"box \[0.1, 0.2, 0.3\] must be four numbers"),
        ([{"label": 0, "box": [0.1, float("nan"), 0.3, 0.4]}], r"is outside \[0, 1\]"),
        (
            [{"label": "unicorn", "box": BOX}],
            r"unknown category 'unicorn'; known categories: 'red circle', 'blue square', .*\.\.\. \(10 in all\)",
        ),
        ([{"label": 10, "box": BOX}], r"category id 10 is out of range \[0, 10\)"),
        ([{"label": -1, "box": BOX}], r"category id -1 is out of range"),
        ([{"label": 1.5, "box": BOX}], r"label must be a category name or an integer id, got 1.5"),
        ([{"label": True, "box": BOX}], r"label must be a category name or an integer id"),
        (
            [{"label": 0, "bbox": BOX}],
            r"object 0: expected a dict with keys \['label', 'box'\], got \['bbox', 'label'\]",
        ),
        ([{"label": 0, "box": BOX}] * 31, r"31 objects is more than this tokenizer holds \(max_objects=30\)"),
        ([], r"non-empty list of layouts"),
        ("red circle", r"non-empty list of layouts"),
    ],
)
def test_layout_bad_input(layout, message):
    tok = LayoutTokenizer(categories=CATEGORIES)
    with pytest.raises(ValueError, match=message):
        tok(layout)


def test_layout_error_names_the_image_in_a_batch():
    tok = LayoutTokenizer(categories=CATEGORIES)
    with pytest.raises(ValueError, match=r"layout 1, object 0: box \[0.2, 0.2, 0.1, 0.3\] has x1 < x0"):
        tok([[{"label": 0, "box": BOX}], [{"label": 0, "box": [0.2, 0.2, 0.1, 0.3]}]])


def test_layout_tokenizer_bad_config():
    with pytest.raises(ValueError, match="duplicate names"):
        LayoutTokenizer(categories=["a", "b", "a"])
    with pytest.raises(ValueError, match="num_classes=2 is smaller than the 3 categories"):
        LayoutTokenizer(categories=["a", "b", "c"], num_classes=2)
    with pytest.raises(ValueError, match="do not fit below the pad token"):
        LayoutTokenizer(vocab_size=16, num_classes=16)
    with pytest.raises(ValueError, match="max_objects"):
        LayoutTokenizer(max_objects=0)


# ---------------------------------------------------------------- ClassEmbedder
@pytest.fixture(scope="module")
def compvis_encoders():
    pytest.importorskip("ldm")
    from compvis_cond_fixtures import import_original_encoders

    return import_original_encoders()


@pytest.mark.parametrize("num_classes,embed_dim,null_class", [(1000, 512, None), (1001, 512, 1000), (11, 16, 10)])
@torch.no_grad()
def test_class_embedder_matches_compvis(compvis_encoders, num_classes, embed_dim, null_class):
    theirs = randomize_(compvis_encoders.ClassEmbedder(embed_dim, n_classes=num_classes, ucg_rate=0.0), 3).eval()
    ours = ClassEmbedder(num_classes=num_classes, embed_dim=embed_dim, null_class=null_class).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)  # same key: embedding.weight
    labels = torch.tensor([0, 5, num_classes - 1, 3])
    out = ours(labels)
    ref = theirs({"class": labels}, disable_dropout=True)
    print(f"ClassEmbedder {num_classes}x{embed_dim}: max abs diff {max_abs_diff(out, ref):.1e}")
    assert out.shape == (4, 1, embed_dim)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=0)
    if null_class is not None:  # the original's unconditional label is its last class
        uc = compvis_encoders.ClassEmbedder(embed_dim, n_classes=num_classes).get_unconditional_conditioning(2, "cpu")
        assert ours.null_labels(2).tolist() == uc["class"].long().tolist()


def test_class_embedder_prepare_and_errors():
    ours = ClassEmbedder(num_classes=11, embed_dim=8, null_class=10)
    assert ours.prepare_labels(3).tolist() == [3]
    assert ours.prepare_labels([1, np.int64(2)]).tolist() == [1, 2]
    assert ours.prepare_labels(torch.tensor([4, 5])).tolist() == [4, 5]
    with pytest.raises(ValueError, match=r"class id 11 \(entry 1\) is out of range \[0, 11\)"):
        ours.prepare_labels([0, 11])
    with pytest.raises(ValueError, match=r"class id -2 \(entry 0\) is out of range"):
        ours.prepare_labels(torch.tensor([-2]))
    with pytest.raises(ValueError, match="class labels must be integer ids, got 2.5"):
        ours.prepare_labels([2.5])
    with pytest.raises(ValueError, match="1-D integer ids"):
        ours.prepare_labels(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="empty"):
        ours.prepare_labels([])
    with pytest.raises(ValueError, match=r"no null class \(null_class=None\).*guidance_scale=1"):
        ClassEmbedder(num_classes=5, embed_dim=8).null_labels(1)
    with pytest.raises(ValueError, match=r"null_class=5 must be an id in \[0, num_classes=5\)"):
        ClassEmbedder(num_classes=5, embed_dim=8, null_class=5)


# ---------------------------------------------------------------- SemanticMapEncoder
def reference_spatial_rescaler(one_hot, weight, bias, n_stages, method, multiplier):
    """CompVis SpatialRescaler.forward: n_stages × interpolate(scale_factor=multiplier, mode=method), then the
    1×1 channel mapper (written out as an einsum over classes)."""
    x = one_hot
    for _ in range(n_stages):
        x = F.interpolate(x, scale_factor=multiplier, mode=method)
    out = torch.einsum("ck,bkhw->bchw", weight[:, :, 0, 0], x)
    return out if bias is None else out + bias[:, None, None]


@pytest.mark.parametrize(
    "params,size",
    [
        (dict(num_classes=182), 64),  # the released semantic-synthesis configuration
        (dict(num_classes=7, n_stages=1, method="nearest", bias=True), 24),
        (dict(num_classes=5, n_stages=3, method="area", multiplier=0.5, out_channels=4), 32),
    ],
)
@torch.no_grad()
def test_semantic_map_encoder_matches_reference(params, size):
    encoder = randomize_(SemanticMapEncoder(**params), seed=2).eval()
    cfg = encoder.config
    ids = torch.randint(0, cfg.num_classes, (2, size, size + 8), generator=torch.Generator().manual_seed(0))
    one_hot = encoder.one_hot(ids)
    assert one_hot.shape == (2, cfg.num_classes, size, size + 8) and torch.equal(one_hot.argmax(1), ids)
    out = encoder(one_hot)
    ref = reference_spatial_rescaler(
        one_hot, encoder.channel_mapper.weight, encoder.channel_mapper.bias, cfg.n_stages, cfg.method, cfg.multiplier
    )
    scale = cfg.multiplier**cfg.n_stages
    assert out.shape == (2, cfg.out_channels, int(size * scale), int((size + 8) * scale))
    assert tuple(out.shape[-2:]) == encoder.output_size(size, size + 8)
    print(f"SemanticMapEncoder {params}: max abs diff {max_abs_diff(out, ref):.1e}")
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    # the memory-light path (no one-hot map) is the same function
    light = encoder.encode_indices(ids)
    print(f"  encode_indices vs forward(one_hot): max abs diff {max_abs_diff(light, out):.1e}")
    torch.testing.assert_close(light, out, rtol=1e-4, atol=1e-5)


def test_semantic_map_inputs():
    encoder = SemanticMapEncoder(num_classes=5)
    ids = np.random.default_rng(0).integers(0, 5, (16, 24)).astype(np.uint8)
    from_pil = encoder.prepare(PIL.Image.fromarray(ids, mode="L"))
    palette = PIL.Image.fromarray(ids, mode="P")
    assert torch.equal(from_pil, torch.from_numpy(ids.astype(np.int64))[None])
    assert torch.equal(encoder.prepare([palette, palette]), from_pil.expand(2, -1, -1))
    assert torch.equal(encoder.prepare(ids), from_pil)
    assert torch.equal(encoder.prepare(torch.from_numpy(ids).long()), from_pil)
    one_hot = encoder.one_hot(ids)
    assert encoder.prepare(one_hot) is one_hot


@pytest.mark.parametrize(
    "segmentation,message",
    [
        (torch.full((1, 8, 8), 5), r"class id 5, outside the model's 5 classes \[0, 5\)"),
        (np.full((8, 8), -1), r"class id -1, outside"),
        (torch.zeros(1, 6, 8, 8), r"one-hot `segmentation` has 6 class channels, the model takes 5"),
        (torch.zeros(6, 8, 8), r"a float `segmentation` must be one-hot \(B, K, H, W\)"),
        (np.zeros((8, 8), np.float32), r"integer class ids, got dtype float32"),
        (PIL.Image.new("RGB", (8, 8)), r"has mode 'RGB': a segmentation must be an index map"),
        ([PIL.Image.new("L", (8, 8)), PIL.Image.new("L", (8, 16))], r"same size"),
        (torch.zeros(1, 1, 8, 8, dtype=torch.long), r"\(H, W\) or \(B, H, W\)"),
        ("map.png", r"must be a PIL index image"),
    ],
)
def test_semantic_map_bad_input(segmentation, message):
    with pytest.raises((ValueError, TypeError), match=message):
        SemanticMapEncoder(num_classes=5).prepare(segmentation)


def test_semantic_map_encoder_bad_config():
    with pytest.raises(ValueError, match="method='linear' is not supported"):
        SemanticMapEncoder(method="linear")


# ---------------------------------------------------------------- common: exports, saving, compile
def test_public_exports():
    import ldm_hub.conditioning as conditioning

    for name in ("LayoutTokenizer", "ClassEmbedder", "SemanticMapEncoder"):
        assert getattr(ldm_hub, name) is getattr(conditioning, name)


def test_models_save_load_through_component_loader(tmp_path):
    for i, model in enumerate(
        [ClassEmbedder(num_classes=7, embed_dim=8, null_class=6), SemanticMapEncoder(num_classes=5, bias=True)]
    ):
        randomize_(model, seed=i)
        model.save_pretrained(tmp_path / str(i))
        again = load_component(tmp_path / str(i), "ldm_hub", type(model).__name__)
        assert type(again) is type(model) and public(again.config) == public(model.config) and not again.training
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


@torch.no_grad()
def test_encoders_compile_fullgraph():
    ce = ClassEmbedder(num_classes=7, embed_dim=8).eval()
    labels = torch.tensor([1, 2])
    torch.testing.assert_close(torch.compile(ce, fullgraph=True, backend="eager")(labels), ce(labels), rtol=0, atol=0)
    se = SemanticMapEncoder(num_classes=5).eval()
    ids = torch.randint(0, 5, (1, 16, 16))
    one_hot = se.one_hot(ids)
    # (compiled, Conv2d takes the plain path instead of the packed oneDNN one: rounding differs)
    torch.testing.assert_close(
        torch.compile(se, fullgraph=True, backend="eager")(one_hot), se(one_hot), rtol=1e-5, atol=1e-6
    )
    light = torch.compile(se.encode_indices, fullgraph=True, backend="eager")
    torch.testing.assert_close(light(ids), se.encode_indices(ids), rtol=0, atol=0)
