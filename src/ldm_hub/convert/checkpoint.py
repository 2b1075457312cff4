"""Reading an original checkpoint file safely: a Lightning ``.ckpt`` (a pickle) or a ``.safetensors``.

The released CompVis files were written by PyTorch Lightning 1.4. Besides ``state_dict`` they hold ``epoch``,
``global_step``, ``pytorch-lightning_version``, ``callbacks`` (a dict keyed by the callback *class*, e.g.
``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint``), ``optimizer_states``, ``lr_schedulers`` and
sometimes hyper-parameters (``argparse.Namespace``, omegaconf containers); their pickles name numpy scalars and
dtypes (``numpy.core.multiarray.scalar``, ``numpy.dtype``) and ``_codecs.encode``. A ``.ckpt`` is read in three
steps, and no code from the file ever runs:

1. its globals are listed without unpickling anything (``torch.serialization.get_unsafe_globals_in_checkpoint``);
2. every global outside torch's own weights-only set must be on :data:`KNOWN_GLOBALS` (or be a numpy-2
   ``numpy.dtypes.*DType`` class); any other is refused by name;
3. the file is unpickled by ``torch.load(weights_only=True)`` with each known name bound to an inert stand-in of
   ldm_hub's own (:class:`ForeignObject` and friends): the named module is never imported, its code never runs.
   Only the ``state_dict`` tensors are kept.

``allow_unsafe_pickle=True`` is for files holding genuinely unknown classes: it prints the globals it is about to
trust, then unpickles with ``weights_only=False`` (the known names still get the stand-ins). Imports nothing of
ldm_hub but :mod:`ldm_hub.loading`.
"""

from __future__ import annotations

import os
import pickle
import re
import sys
import types
from collections.abc import Mapping
from pathlib import Path

import torch

from ..loading import ModelFileError, load_safetensors_file

# ------------------------------------------------------------------------------------------- inert stand-ins


class ForeignObject:
    """An inert stand-in for an object of a class ldm_hub does not import (a Lightning callback, an omegaconf
    node, an ``argparse.Namespace``, a numpy scalar): it keeps its constructor arguments and pickled state as
    plain data and runs nothing. ``foreign_name`` is the global the checkpoint named."""

    foreign_name = "?"

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        self.args, self.state = args, None
        return self

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __repr__(self) -> str:
        return f"<stand-in for {self.foreign_name}>"


class _PlainDict:
    """Stand-in for a dict subclass (Lightning's ``AttributeDict``, ``collections.defaultdict``): a plain dict."""

    def __new__(cls, *args, **kwargs):
        return {}


class _PlainList:
    def __new__(cls, *args, **kwargs):
        return []


def _reconstructor(cls, base, state=None):
    """``copyreg._reconstructor`` (protocol 0/1 objects), for stand-in classes only."""
    if not (isinstance(cls, type) and issubclass(cls, ForeignObject)):
        raise pickle.UnpicklingError(f"copyreg._reconstructor called for {cls!r}, which is not a known class")
    return cls.__new__(cls)


_LIGHTNING_CALLBACKS = {
    "model_checkpoint": ("ModelCheckpoint",),
    "early_stopping": ("EarlyStopping",),
    "lr_monitor": ("LearningRateMonitor",),
    "progress": ("ProgressBar", "ProgressBarBase"),
    "progress.tqdm_progress": ("TQDMProgressBar",),
    "progress.rich_progress": ("RichProgressBar",),
    "gpu_stats_monitor": ("GPUStatsMonitor",),
    "device_stats_monitor": ("DeviceStatsMonitor",),
    "xla_stats_monitor": ("XLAStatsMonitor",),
    "stochastic_weight_avg": ("StochasticWeightAveraging",),
    "timer": ("Timer",),
    "gradient_accumulation_scheduler": ("GradientAccumulationScheduler",),
    "model_summary": ("ModelSummary",),
    "finetuning": ("BaseFinetuning", "BackboneFinetuning"),
    "pruning": ("ModelPruning",),
    "quantization": ("QuantizationAwareTraining",),
    "lambda_function": ("LambdaCallback",),
}
_OMEGACONF = (
    "omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig", "omegaconf.base.ContainerMetadata",
    "omegaconf.base.Metadata", "omegaconf.nodes.AnyNode", "omegaconf.nodes.StringNode", "omegaconf.nodes.IntegerNode",
    "omegaconf.nodes.FloatNode", "omegaconf.nodes.BooleanNode", "omegaconf.nodes.BytesNode",
    "omegaconf.nodes.PathNode", "omegaconf.nodes.EnumNode", "omegaconf.nodes.ValueNode",
)  # fmt: skip
_NUMPY = tuple(
    f"{m}.{n}" for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("scalar", "_reconstruct")
)

# Every global a released Lightning / CompVis checkpoint names beyond torch's weights-only set, and its stand-in.
# (``_codecs.encode``, the bytes of numpy scalars in protocol 2, is already in torch's set: a pure function.)
KNOWN_GLOBALS: dict[str, type] = {
    **{name: ForeignObject for name in (*_NUMPY, "numpy.dtype", "numpy.ndarray")},
    **{
        f"{root}.{module}.{cls}": ForeignObject
        for root in ("pytorch_lightning.callbacks", "lightning.pytorch.callbacks")
        for module, classes in _LIGHTNING_CALLBACKS.items()
        for cls in classes
    },
    "pytorch_lightning.utilities.parsing.AttributeDict": _PlainDict,
    "lightning.fabric.utilities.data.AttributeDict": _PlainDict,
    "argparse.Namespace": ForeignObject,
    **dict.fromkeys(_OMEGACONF, ForeignObject),
    "typing.Any": ForeignObject,
    "collections.defaultdict": _PlainDict,
    "builtins.dict": _PlainDict,
    "builtins.list": _PlainList,
    **{f"builtins.{t}": ForeignObject for t in ("int", "float", "str", "bool", "bytes", "tuple", "object", "type")},
    "copyreg._reconstructor": _reconstructor,
}
NUMPY_DTYPE_CLASS = re.compile(r"^numpy\.dtypes\.[A-Za-z0-9_]+DType$")  # numpy 2: numpy.dtypes.Float64DType, ...
_stand_ins: dict[str, object] = {}


def stand_in(name: str):
    """The inert object bound to global ``name`` while unpickling, or None for a global that is not known."""
    kind = KNOWN_GLOBALS.get(name) or (ForeignObject if NUMPY_DTYPE_CLASS.match(name) else None)
    if kind is None:
        return None
    if kind is ForeignObject and name not in _stand_ins:  # one named subclass per global, for a readable repr
        _stand_ins[name] = type(name.rsplit(".", 1)[-1], (ForeignObject,), {"foreign_name": name})
    return _stand_ins.get(name, kind)


# ------------------------------------------------------------------------------------------- reading


def checkpoint_globals(path: str | os.PathLike) -> list[str]:
    """The globals a ``torch.save`` file names beyond torch's weights-only set, read without unpickling."""
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except ValueError:  # not a zip checkpoint: the legacy format (or a bare pickle), a sequence of pickles
        return sorted(_legacy_globals(Path(path)))
    except Exception as e:  # noqa: BLE001 - torch raises many types for a broken file
        raise ModelFileError(f"could not read checkpoint {path}: {type(e).__name__}: {e}") from None


def _legacy_globals(path: Path) -> set[str]:
    """The globals of the pickles at the start of a legacy-format torch file (or of a bare pickle)."""
    import pickletools

    from torch import _weights_only_unpickler as restricted

    found: set[str] = set()
    with open(path, "rb") as f:
        for _ in range(5):  # magic number, protocol, system info, the object, the storage keys
            strings: list[str] = []  # the strings pushed so far (STACK_GLOBAL takes the last two)
            memo: dict[int, str] = {}
            memo_count, last = 0, None
            try:
                for opcode, arg, _ in pickletools.genops(f):
                    name = opcode.name
                    if name == "GLOBAL":
                        found.add(".".join(str(arg).split(" ", 1)))
                    elif name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.add(f"{strings[-2]}.{strings[-1]}")
                    elif name == "MEMOIZE":
                        if last is not None:
                            memo[memo_count] = last
                        memo_count += 1
                    elif name in ("PUT", "BINPUT", "LONG_BINPUT") and last is not None:
                        memo[arg] = last
                    elif name in ("GET", "BINGET", "LONG_BINGET") and arg in memo:
                        strings.append(memo[arg])
                    last = arg if isinstance(arg, str) and "UNICODE" in name else None
                    if last is not None:
                        strings.append(last)
            except Exception:  # noqa: BLE001 - the raw storage bytes after the pickles; the load checks again
                break
    return {_compat_name(name) for name in found} - set(restricted._get_allowed_globals())


def _compat_name(name: str) -> str:
    """Python 2 names as unpickling reads them (``__builtin__.long`` → ``builtins.int``)."""
    import _compat_pickle

    module, _, attr = name.rpartition(".")
    if (module, attr) in _compat_pickle.NAME_MAPPING:
        module, attr = _compat_pickle.NAME_MAPPING[(module, attr)]
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{attr}"


def load_checkpoint(path: str | os.PathLike, *, allow_unsafe_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of an original checkpoint: a Lightning ``.ckpt`` (its ``state_dict``) or a ``.safetensors``.

    A ``.ckpt`` whose globals are all torch's or :data:`KNOWN_GLOBALS` loads with the known ones as inert
    stand-ins; any other global is refused by name before anything is unpickled, unless
    ``allow_unsafe_pickle=True`` (only for files you trust: unpickling them can run arbitrary code).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"missing checkpoint: {path}")
    if path.suffix == ".safetensors":
        return load_safetensors_file(path)
    found = checkpoint_globals(path)
    unknown = [name for name in found if stand_in(name) is None]
    if unknown and not allow_unsafe_pickle:
        raise ModelFileError(_refusal(path, ", ".join(unknown)))
    if unknown:
        print(f"allow_unsafe_pickle: unpickling {path} trusts its globals: {', '.join(unknown)}", file=sys.stderr)
        obj = _unsafe_load(path)
    else:
        obj = _safe_load(path, found, allow_unsafe_pickle)
    return _state_dict_tensors(obj, path)


def _refusal(path: Path, names: str) -> str:
    return (
        f"refusing to load {path}: torch.load(weights_only=True) would need the global(s) {names}, which are "
        "neither tensors nor the known contents of a Lightning checkpoint. A .ckpt is a pickle, and unpickling "
        "these can run arbitrary code (nothing of the file was run). If you trust this file, allow it explicitly "
        "with allow_unsafe_pickle=True (CLI: --allow-unsafe-pickle), or convert it to .safetensors once and use that."
    )


def _safe_load(path: Path, found: list[str], allow_unsafe_pickle: bool):
    try:
        with torch.serialization.safe_globals([(stand_in(name), name) for name in found]):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # a global the static listing could not see (a legacy-format file)
        if allow_unsafe_pickle:
            return _unsafe_load(path)
        lines = str(e).strip().splitlines() or [type(e).__name__]
        reason = next((line for line in lines if "Unsupported" in line or "global" in line.lower()), lines[0])
        raise ModelFileError(_refusal(path, reason.strip())) from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for a broken file
        raise ModelFileError(f"could not read checkpoint {path}: {type(e).__name__}: {e}") from None


class _KnownAsStandIns(pickle.Unpickler):
    """The full unpickler for trusted files, still binding the known Lightning / omegaconf / numpy names to
    stand-ins (so neither module is imported); builtins resolve as usual."""

    def find_class(self, module, name):
        full = f"{module}.{name}"
        if not full.startswith(("builtins.", "copyreg.")) and stand_in(full) is not None:
            return stand_in(full)
        return super().find_class(module, name)


def _unsafe_load(path: Path):
    pickle_module = types.ModuleType("ldm_hub_trusted_pickle")
    pickle_module.Unpickler = _KnownAsStandIns
    pickle_module.load = pickle.load
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False, pickle_module=pickle_module)
    except Exception as e:  # noqa: BLE001
        raise ModelFileError(f"could not read checkpoint {path}: {type(e).__name__}: {e}") from None


def _state_dict_tensors(obj, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ModelFileError(f"{path} holds no state dict (found {type(obj).__name__})")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ModelFileError(f"{path}: state dict entries that are not tensors: {not_tensors[:5]}")
    return dict(obj)
