"""Issue 15, group 4, third bullet: config values are checked when a model is loaded, each error naming the field
(and the file): scaling_factor, num_train_timesteps, a scheduler class that does not exist, a component override
of the wrong type, torch_dtype."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from ldm_hub import DDIMScheduler, LDMPipeline
from ldm_hub.loading import ModelFileError


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from ldm_hub.presets import build_pipeline

    folder = tmp_path_factory.mktemp("load-checks") / "pipe"
    build_pipeline("unconditional-tiny").save_pretrained(folder)
    return folder


@pytest.fixture
def copy(saved, tmp_path):
    folder = tmp_path / "pipe"
    shutil.copytree(saved, folder)
    return folder


def edit(path, **values):
    config = json.loads(path.read_text())
    config.update(values)
    path.write_text(json.dumps(config))


# ---------------------------------------------------------------------------------------------- scaling_factor
@pytest.mark.parametrize("value", [0, -0.5, math.nan, math.inf, "0.18215", True])
def test_scaling_factor_must_be_positive_finite(copy, value):
    edit(copy / "vae" / "config.json", scaling_factor=value)  # json writes NaN / Infinity, and reads them back
    with pytest.raises(ModelFileError, match=r"vae/config.json: `scaling_factor` must be a positive finite number"):
        LDMPipeline.from_pretrained(copy)


# ---------------------------------------------------------------------------------------------- scheduler config
@pytest.mark.parametrize("value", [0, -3, 2.5, "1000"])
def test_num_train_timesteps_must_be_at_least_one(copy, value):
    edit(copy / "scheduler" / "scheduler_config.json", num_train_timesteps=value)
    with pytest.raises(ModelFileError, match=r"scheduler_config.json: `num_train_timesteps` must be an integer >= 1"):
        LDMPipeline.from_pretrained(copy)


@pytest.mark.parametrize("name, value", [("beta_start", 0), ("beta_end", 1.5), ("beta_end", "0.012")])
def test_betas_must_be_in_the_unit_interval(copy, name, value):
    edit(copy / "scheduler" / "scheduler_config.json", **{name: value})
    with pytest.raises(ModelFileError, match=rf"`{name}` must be a number in \(0, 1\)"):
        LDMPipeline.from_pretrained(copy)


@pytest.mark.parametrize("entry", [["ldm_hub", "EulerScheduler"], ["diffusers", "NoSuchScheduler"]])
def test_scheduler_class_that_does_not_exist(copy, entry):
    edit(copy / "model_index.json", scheduler=entry)
    with pytest.raises(ModelFileError, match=rf"scheduler.*{entry[1]}"):
        LDMPipeline.from_pretrained(copy)


def test_scheduler_class_named_by_a_non_class_attribute(copy):
    edit(copy / "model_index.json", scheduler=["ldm_hub", "default_model_path"])  # a function of the package
    with pytest.raises(ModelFileError, match="unknown ldm_hub class 'default_model_path'"):
        LDMPipeline.from_pretrained(copy)


# ---------------------------------------------------------------------------------------------- overrides
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(scheduler="ddim"), r"`scheduler` must be a scheduler object .* got str 'ddim'"),
        (dict(scheduler=DDIMScheduler), r"`scheduler` must be a scheduler object"),  # the class, not an instance
        (dict(unet="path/to/unet"), r"`unet` must be a model .* got str 'path/to/unet'"),
        (dict(vae=None), r"`vae` is a required component; it cannot be None"),
        (dict(tokenizer="bert-base-uncased"), r"`tokenizer` must be a loaded tokenizer object"),
        (dict(cond_encoder=3), r"`cond_encoder` must be a model .* got int"),
    ],
)
def test_component_override_of_the_wrong_type(saved, kwargs, match):
    with pytest.raises(TypeError, match=match):
        LDMPipeline.from_pretrained(saved, **kwargs)


def test_a_right_override_still_loads(saved):
    pipe = LDMPipeline.from_pretrained(saved, scheduler=DDIMScheduler(num_train_timesteps=1000))
    assert isinstance(pipe.scheduler, DDIMScheduler)


# ---------------------------------------------------------------------------------------------- torch_dtype
@pytest.mark.parametrize(
    "dtype, match",
    [
        ("float7", r"`torch_dtype` must be a torch.dtype such as torch.float16 or torch.bfloat16, got the string"),
        ("float16", r"`torch_dtype` must be a torch.dtype such as torch.float16, got the string 'float16'"),
        (torch.int8, r"`torch_dtype` must be a floating torch.dtype .* got torch.int8"),
        (16, r"`torch_dtype` must be a floating torch.dtype"),
    ],
)
def test_torch_dtype_must_be_a_floating_dtype(saved, dtype, match):
    with pytest.raises(TypeError, match=match):
        LDMPipeline.from_pretrained(saved, torch_dtype=dtype)


def test_a_floating_torch_dtype_loads(saved):
    pipe = LDMPipeline.from_pretrained(saved, torch_dtype=torch.bfloat16)
    assert pipe.unet.dtype == torch.bfloat16
