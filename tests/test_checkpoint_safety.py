"""Issue 15, group 1: the real released CompVis checkpoint files load safely, and hostile ones never run.

The checkpoints are written here the way PyTorch Lightning 1.4 wrote the released files: ``epoch``,
``global_step``, ``pytorch-lightning_version``, ``callbacks`` keyed by the class
``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint``, ``optimizer_states``, ``lr_schedulers``,
omegaconf / ``argparse.Namespace`` hyper-parameters and numpy scalars under their numpy-1 names
(``numpy.core.multiarray.scalar``). Stand-in modules of exactly those module paths and class names exist only
while saving (no Lightning needed); everything is then loaded in a fresh Python process where they do not exist.
"""

from __future__ import annotations

import argparse
import builtins
import collections
import datetime
import json
import os
import pickle
import subprocess
import sys
import types
import typing

import compvis_oracle as oracle
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from ldm_hub.convert.checkpoint import KNOWN_GLOBALS, checkpoint_globals, load_checkpoint, stand_in
from ldm_hub.loading import ModelFileError

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
LIGHTNING_NAMES = (
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "pytorch_lightning.utilities.parsing.AttributeDict",
    "omegaconf.dictconfig.DictConfig",
    "omegaconf.base.ContainerMetadata",
    "omegaconf.nodes.AnyNode",
    "numpy.core.multiarray.scalar",
    "numpy.dtype",
    "argparse.Namespace",
)


# ---------------------------------------------------------------------------------------------- writing
def _module(monkeypatch, name: str, **classes) -> types.ModuleType:
    module = types.ModuleType(name)
    for cls_name, cls in classes.items():
        cls.__module__, cls.__qualname__, cls.__name__ = name, cls_name, cls_name
        setattr(module, cls_name, cls)
    monkeypatch.setitem(sys.modules, name, module)
    return module


def _lightning_dump(monkeypatch, state_dict: dict) -> dict:
    """What Lightning 1.4's ``dump_checkpoint`` holds, built with stand-ins of the real module paths."""

    class ModelCheckpoint:
        pass

    class AttributeDict(dict):
        pass

    class ContainerMetadata:
        def __init__(self):
            self.ref_type, self.object_type, self.key_type, self.element_type = typing.Any, dict, typing.Any, int
            self.optional, self.flags, self.resolver_cache = True, {}, collections.defaultdict(dict)

    class AnyNode:
        def __init__(self, value):
            self._val, self._metadata = value, None

    class DictConfig:  # omegaconf pickles a container's __dict__: metadata, parent, content of nodes
        def __init__(self, content):
            self._metadata, self._parent = ContainerMetadata(), None
            self._content = {k: AnyNode(v) for k, v in content.items()}

    def scalar(dtype, data):  # numpy 1's numpy.core.multiarray.scalar
        raise AssertionError("only for pickling")

    class Numpy1Scalar:
        def __init__(self, value):
            self.value = np.float64(value)

        def __reduce__(self):
            return scalar, (self.value.dtype, self.value.tobytes())

    _module(monkeypatch, "pytorch_lightning")
    _module(monkeypatch, "pytorch_lightning.callbacks")
    _module(monkeypatch, "pytorch_lightning.callbacks.model_checkpoint", ModelCheckpoint=ModelCheckpoint)
    _module(monkeypatch, "pytorch_lightning.utilities")
    _module(monkeypatch, "pytorch_lightning.utilities.parsing", AttributeDict=AttributeDict)
    _module(monkeypatch, "omegaconf")
    _module(monkeypatch, "omegaconf.base", ContainerMetadata=ContainerMetadata)
    _module(monkeypatch, "omegaconf.nodes", AnyNode=AnyNode)
    _module(monkeypatch, "omegaconf.dictconfig", DictConfig=DictConfig)
    numpy1 = _module(monkeypatch, "numpy.core.multiarray")
    scalar.__module__, scalar.__qualname__ = "numpy.core.multiarray", "scalar"
    numpy1.scalar = scalar

    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.AdamW([param], lr=4.5e-6)
    param.grad = torch.ones(3)
    optimizer.step()
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    hparams = DictConfig({"base_learning_rate": 4.5e-6, "embed_dim": 4})
    return {
        "epoch": 3,
        "global_step": 470000,
        "pytorch-lightning_version": "1.4.2",
        "state_dict": state_dict,
        "callbacks": {
            ModelCheckpoint: {
                "monitor": "val/rec_loss",
                "best_model_score": Numpy1Scalar(0.25),  # the numpy-1 spelling, exactly
                "best_model_path": "logs/checkpoints/last.ckpt",
                "current_score": torch.tensor(0.3),
                "dirpath": "logs/checkpoints",
                "kth_value": np.float64(0.5),  # numpy 2's own spelling: numpy._core.multiarray.scalar
                "dtype_class": type(np.dtype("float64")),  # numpy.dtypes.Float64DType
                "history": np.arange(3.0),  # numpy._core.multiarray._reconstruct, numpy.ndarray
            }
        },
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [schedule.state_dict()],
        "hparams_name": "kwargs",
        "hyper_parameters": hparams,
        "hparams_type": DictConfig,
        "args": argparse.Namespace(base=["configs/autoencoder.yaml"], train=True, seed=23),
        "datamodule_hparams": AttributeDict(batch_size=12),
    }


class _Hostile:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny kl-f8 first stage (CompVis keys) written five ways, the hostile files, and the YAML."""
    root = tmp_path_factory.mktemp("ckpts")
    model = oracle.OriginalModel(oracle.tiny(oracle.ZOO["kl-f8"]))
    state_dict = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    (root / "kl.yaml").write_text(yaml.safe_dump({"model": model.config}, sort_keys=False))
    monkeypatch = pytest.MonkeyPatch()
    try:
        torch.save(_lightning_dump(monkeypatch, state_dict), root / "lightning.ckpt")
        torch.save(
            _lightning_dump(monkeypatch, state_dict), root / "legacy.ckpt", _use_new_zipfile_serialization=False
        )
    finally:
        monkeypatch.undo()
    torch.save({"state_dict": state_dict}, root / "stripped.ckpt")
    torch.save(state_dict, root / "bare.ckpt")
    save_file(state_dict, str(root / "model.safetensors"))
    marker = root / "PWNED"
    torch.save({"state_dict": state_dict, "x": _Hostile(os.system, f"touch {marker}")}, root / "system.ckpt")
    torch.save({"state_dict": _Hostile(builtins.open, str(marker), "w")}, root / "open.ckpt")
    torch.save(
        _Hostile(os.system, f"touch {marker}"), root / "legacy-system.ckpt", _use_new_zipfile_serialization=False
    )
    (root / "raw-pickle.ckpt").write_bytes(pickle.dumps(_Hostile(os.system, f"touch {marker}")))
    torch.save({"state_dict": state_dict, "when": datetime.timedelta(days=1)}, root / "unknown.ckpt")
    return root


LOADER = r"""
import contextlib, io, json, sys
from pathlib import Path
from ldm_hub.cli import main
root = Path(sys.argv[1])
out = {}
for name in sys.argv[2:]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["convert", str(root / name), "--original-config", str(root / "kl.yaml"),
                     "--output", str(root / ("out-" + name))])
    out[name] = {"code": code, "stderr": err.getvalue()}
out["modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("pytorch_lightning", "lightning", "omegaconf"))
print(json.dumps(out))
"""

GOOD = ["lightning.ckpt", "legacy.ckpt", "stripped.ckpt", "bare.ckpt", "model.safetensors"]
HOSTILE = ["system.ckpt", "open.ckpt", "legacy-system.ckpt", "raw-pickle.ckpt"]


@pytest.fixture(scope="module")
def converted(files):
    """Every file through ``ldm-hub convert`` with default flags, in a process without the stand-in modules."""
    proc = subprocess.run(
        [sys.executable, "-c", LOADER, str(files), *GOOD, *HOSTILE, "unknown.ckpt"],
        env=ENV, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- what loads
def test_lightning_dump_lists_exactly_the_released_globals(files):
    """The listing is static (nothing unpickled), and every name it finds is on the allow-list."""
    found = checkpoint_globals(files / "lightning.ckpt")
    for name in LIGHTNING_NAMES + ("numpy._core.multiarray.scalar", "numpy.dtypes.Float64DType"):
        assert name in found, found
    assert all(stand_in(name) is not None for name in found), [n for n in found if stand_in(n) is None]


def test_every_variant_converts_with_default_flags_to_identical_weights(files, converted):
    """Full Lightning dump (zip and legacy format), stripped {"state_dict"}, bare state dict, .safetensors."""
    from safetensors.torch import load_file

    for name in GOOD:
        assert converted[name] == {"code": 0, "stderr": ""}, (name, converted[name])
    reference = load_file(files / "out-model.safetensors" / "diffusion_pytorch_model.safetensors")
    for name in GOOD[:-1]:
        weights = load_file(files / f"out-{name}" / "diffusion_pytorch_model.safetensors")
        assert weights.keys() == reference.keys()
        assert all(torch.equal(weights[k], reference[k]) for k in reference), name
        config = json.loads((files / f"out-{name}" / "config.json").read_text())
        assert config == json.loads((files / "out-model.safetensors" / "config.json").read_text())


def test_no_lightning_or_omegaconf_imported_by_a_load(converted):
    """omegaconf is installed here; neither it nor Lightning is imported on account of the conversions."""
    assert converted["modules"] == []


def test_only_the_state_dict_tensors_are_kept(files):
    tensors = load_checkpoint(files / "lightning.ckpt")
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    assert not any(k in tensors for k in ("callbacks", "optimizer_states", "hyper_parameters", "epoch"))
    assert tensors.keys() == load_checkpoint(files / "model.safetensors").keys()


def test_stand_ins_are_inert_and_of_our_own():
    """Each known name maps to an ldm_hub object; the named module is never imported."""
    for name in KNOWN_GLOBALS:
        assert stand_in(name).__module__ == "ldm_hub.convert.checkpoint", name
    assert stand_in("numpy.dtypes.Float64DType").__module__ == "ldm_hub.convert.checkpoint"
    assert stand_in("numpy.dtypes.os.system") is None and stand_in("posix.system") is None
    assert stand_in("pytorch_lightning.trainer.Trainer") is None  # only the callback classes


# ---------------------------------------------------------------------------------------------- what is refused
@pytest.mark.parametrize("name, refused", [
    ("system.ckpt", "posix.system"),
    ("open.ckpt", "io.open"),  # builtins.open is io.open
    ("legacy-system.ckpt", "system"),
    ("raw-pickle.ckpt", "system"),
])  # fmt: skip
def test_hostile_pickle_is_refused_by_name_and_never_runs(files, converted, name, refused):
    result = converted[name]
    assert result["code"] == 2
    lines = result["stderr"].strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result["stderr"], result["stderr"]
    assert lines[0].startswith(f"ldm-hub convert: error: refusing to load {files / name}")
    assert refused in lines[0] and "--allow-unsafe-pickle" in lines[0]
    assert not (files / "PWNED").exists()
    assert not (files / f"out-{name}").exists()


def test_hostile_pickle_refused_in_process_names_the_global(files):
    for name, refused in (("system.ckpt", "posix.system"), ("open.ckpt", "io.open")):
        with pytest.raises(ModelFileError, match=rf"refusing to load .*{name}.*{refused}"):
            load_checkpoint(files / name)
    assert not (files / "PWNED").exists()


def test_unknown_class_refused_by_default_names_it(files, converted):
    result = converted["unknown.ckpt"]
    assert result["code"] == 2 and "datetime.timedelta" in result["stderr"]
    assert len(result["stderr"].strip().splitlines()) == 1
    with pytest.raises(ModelFileError, match=r"datetime\.timedelta.*allow_unsafe_pickle=True"):
        load_checkpoint(files / "unknown.ckpt")


def test_allow_unsafe_pickle_first_prints_what_it_trusts(files, capsys):
    tensors = load_checkpoint(files / "unknown.ckpt", allow_unsafe_pickle=True)
    err = capsys.readouterr().err
    assert "allow_unsafe_pickle" in err and "datetime.timedelta" in err and str(files / "unknown.ckpt") in err
    assert tensors.keys() == load_checkpoint(files / "model.safetensors").keys()
    # known names keep their stand-ins even then: no Lightning needed
    load_checkpoint(files / "lightning.ckpt", allow_unsafe_pickle=True)
    assert "pytorch_lightning" not in sys.modules


def test_broken_files_name_the_path(files, tmp_path):
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((files / "lightning.ckpt").read_bytes()[:5000])
    with pytest.raises(ModelFileError, match=rf"could not read checkpoint {truncated}"):
        load_checkpoint(truncated)
    with pytest.raises(ModelFileError, match=rf"missing checkpoint: {tmp_path / 'nope.ckpt'}"):
        load_checkpoint(tmp_path / "nope.ckpt")
    torch.save([1, 2], tmp_path / "list.ckpt")
    with pytest.raises(ModelFileError, match=rf"{tmp_path / 'list.ckpt'} holds no state dict"):
        load_checkpoint(tmp_path / "list.ckpt")
