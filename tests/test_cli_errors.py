"""Issue 15, group 5: the command line never shows a traceback for a user's mistake or their environment.

Each case asserts the exit status (2 a bad input, 1 the environment, 130 Ctrl-C, 3 a missed --fail-under bar), one
line on stderr ``ldm-hub <cmd>: error: ...`` naming the flag, and no traceback. Most run in-process
(``ldm_hub.cli.main``); the traceback / --debug / Ctrl-C cases also through the installed console script."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from ldm_hub import LDMPipeline
from ldm_hub.cli import main


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from ldm_hub.presets import build_pipeline

    folder = tmp_path_factory.mktemp("cli-errors") / "uncond"
    build_pipeline("unconditional-tiny").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def vq(tmp_path_factory):
    from ldm_hub.presets import build_pipeline

    folder = tmp_path_factory.mktemp("cli-errors") / "vq"
    build_pipeline("superres-tiny").vae.save_pretrained(folder)
    return folder


PROGRESS_BAR = re.compile(r"^\s*\d+%\|")


def cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def without_progress(err: str) -> str:
    """stderr without the sampling progress bar's lines (tqdm's ``  0%|...|``)."""
    return "\n".join(line for line in err.splitlines() if line.strip() and not PROGRESS_BAR.match(line))


def one_error_line(err: str, command: str) -> str:
    """stderr is exactly one line (besides a progress bar), ``ldm-hub <command>: error: ...``, no traceback."""
    assert "Traceback" not in err
    lines = without_progress(err).splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"ldm-hub {command}: error: "), err
    return lines[0]


def console(*args, env=None, **kwargs) -> subprocess.CompletedProcess:
    exe = shutil.which("ldm-hub", path=os.path.dirname(sys.executable))
    assert exe, "the ldm-hub console script is not installed next to this Python"
    env = {**os.environ, **(env or {})}
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=300, env=env, **kwargs)


# ---------------------------------------------------------------------------------------------- the device
def test_device_cuda_without_cuda(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc, _, err = cli(capsys, "generate", "--device", "cuda", "--output", tmp_path / "x.png")
    line = one_error_line(err, "generate")
    assert rc == 1 and "--device cuda: CUDA is not available" in line and "use --device cpu" in line


def test_device_index_out_of_range(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    rc, _, err = cli(capsys, "generate", "--device", "cuda:3", "--output", tmp_path / "x.png")
    assert rc == 2 and "--device cuda:3: this machine has 1 CUDA device(s)" in one_error_line(err, "generate")


def test_device_that_is_no_device(capsys, vq):
    rc, _, err = cli(capsys, "evaluate", vq, "--task", "autoencoder", "--device", "gpu0")
    assert rc == 2 and "--device 'gpu0' is not a torch device" in one_error_line(err, "evaluate")


# ---------------------------------------------------------------------------------------------- push
def test_push_without_a_token(capsys, monkeypatch, model):
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    rc, _, err = cli(capsys, "push", model, "me/repo")
    line = one_error_line(err, "push")
    assert rc == 1 and "no Hub token" in line and "hf auth login" in line and "HF_TOKEN" in line and "--token" in line


def test_push_offline(capsys, monkeypatch, model):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    rc, _, err = cli(capsys, "push", model, "me/repo", "--token", "hf_x")
    assert rc == 1 and "HF_HUB_OFFLINE is set" in one_error_line(err, "push")


def test_push_when_the_hub_cannot_be_reached(capsys, monkeypatch, model):
    from huggingface_hub import constants

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    rc, _, err = cli(capsys, "push", model, "me/repo", "--token", "hf_x")
    line = one_error_line(err, "push")
    assert rc == 1 and "cannot reach the Hub at http://127.0.0.1" in line and "check the network" in line


def test_push_a_folder_that_is_not_a_pipeline(capsys, monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    rc, _, err = cli(capsys, "push", tmp_path, "me/repo", "--token", "hf_x")
    assert rc == 2 and f"FOLDER {tmp_path}: no model_index.json there" in one_error_line(err, "push")


# ---------------------------------------------------------------------------------------------- demo
def test_demo_on_a_port_in_use(capsys):
    pytest.importorskip("gradio")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc, _, err = cli(capsys, "demo", "--port", port)
    line = one_error_line(err, "demo")
    assert rc == 1 and f"--port {port}: port {port} on 127.0.0.1 is in use" in line and "pass --port" in line


@pytest.mark.parametrize("port", ["70000", "0", "-1"])
def test_demo_port_out_of_range(capsys, port):
    pytest.importorskip("gradio")
    rc, _, err = cli(capsys, "demo", "--port", port)
    assert rc == 2 and f"--port {port}: must be" in one_error_line(err, "demo")


# ---------------------------------------------------------------------------------------------- paths
def test_output_path_under_a_regular_file(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    rc, _, err = cli(capsys, "generate", "--output", tmp_path / "file" / "out.png")
    line = one_error_line(err, "generate")
    assert rc == 2 and f"{tmp_path / 'file'} is a file, not a folder; choose another --output" in line


def test_output_path_that_is_a_folder(capsys, tmp_path):
    (tmp_path / "out.png").mkdir()
    rc, _, err = cli(capsys, "generate", "--output", tmp_path / "out.png")
    assert rc == 2 and "--output" in one_error_line(err, "generate") and "is a folder" in err


def test_output_folder_not_writable(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # (as root every folder is writable)
    rc, _, err = cli(capsys, "generate", "--output", tmp_path / "out.png")
    assert rc == 1 and f"permission denied writing into {tmp_path}" in one_error_line(err, "generate")


def test_evaluate_json_under_a_regular_file(capsys, tmp_path, vq):
    (tmp_path / "file").write_text("x")
    rc, _, err = cli(capsys, "evaluate", vq, "--task", "autoencoder", "--json", tmp_path / "file" / "r.json")
    assert rc == 2 and "--json" in one_error_line(err, "evaluate") and "is a file, not a folder" in err


# ---------------------------------------------------------------------------------------------- convert's YAML
AUTOENCODER_YAML = """\
model:
  target: ldm.models.autoencoder.AutoencoderKL
  params:
    embed_dim: 4
    ddconfig:
      double_z: true
      z_channels: 4
      resolution: 32
      in_channels: 3
      out_ch: 3
      ch: 32
{ch_mult}      num_res_blocks: 1
      attn_resolutions: []
"""


@pytest.mark.parametrize("missing", ["ch_mult", "z_channels", "ch"])
def test_convert_yaml_missing_a_ddconfig_field(capsys, tmp_path, missing):
    text = AUTOENCODER_YAML.format(ch_mult="      ch_mult: [1, 2]\n")
    text = "\n".join(line for line in text.splitlines() if not line.strip().startswith(f"{missing}:")) + "\n"
    (tmp_path / "ae.yaml").write_text(text)
    torch.save({"state_dict": {"encoder.conv_in.weight": torch.zeros(1)}}, tmp_path / "ae.ckpt")
    rc, _, err = cli(
        capsys, "convert", tmp_path / "ae.ckpt", "--original-config", tmp_path / "ae.yaml", "--output", tmp_path / "o"
    )
    line = one_error_line(err, "convert")
    assert rc == 2 and f"params.ddconfig is missing field {missing!r} (ddconfig.{missing})" in line
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------- Ctrl-C, full disk
def test_ctrl_c_during_sampling(capsys, monkeypatch, model, tmp_path):
    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(LDMPipeline, "__call__", interrupted)
    rc, _, err = cli(capsys, "generate", "--model", model, "--steps", "1", "--output", tmp_path / "out.png")
    assert rc == 130 and without_progress(err) == "ldm-hub generate: interrupted"
    assert list(tmp_path.iterdir()) == []  # no output, no temporary file


def test_ctrl_c_while_the_png_is_written_leaves_no_partial_file(capsys, monkeypatch, model, tmp_path):
    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)  # between writing the bytes and the rename
    rc, _, err = cli(capsys, "generate", "--model", model, "--steps", "1", "--output", tmp_path / "out.png")
    assert rc == 130 and without_progress(err) == "ldm-hub generate: interrupted"
    assert list(tmp_path.iterdir()) == []


def test_disk_full_names_the_path_and_leaves_nothing(capsys, monkeypatch, model, tmp_path):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    (tmp_path / "out.png").write_bytes(b"the previous image")
    monkeypatch.setattr(os, "fsync", full)
    rc, _, err = cli(capsys, "generate", "--model", model, "--steps", "1", "--output", tmp_path / "out.png")
    line = one_error_line(err, "generate")
    assert rc == 1 and line.startswith("ldm-hub generate: error: --output: ")
    assert str(tmp_path / "out.png") in line and "No space left on device" in line and "the disk is full" in line
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temporary sibling left
    assert (tmp_path / "out.png").read_bytes() == b"the previous image"  # the previous file intact


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
def test_ctrl_c_in_a_real_process(model, tmp_path):
    """A real SIGINT while the model loads: one line, exit 130, no file (the load is made slow and says when it
    started, so the signal lands inside the command)."""
    script = tmp_path / "slow.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, time
            from ldm_hub import LDMPipeline
            from ldm_hub.cli import main

            def slow(*args, **kwargs):
                print("loading", flush=True)
                time.sleep(60)

            LDMPipeline.from_pretrained = slow
            sys.exit(main(sys.argv[1:]))
            """
        )
    )
    out = tmp_path / "out.png"
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, script, "generate", "--model", model, "--output", out],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "loading"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and without_progress(err) == "ldm-hub generate: interrupted"
    assert not out.exists() and list(tmp_path.iterdir()) == [script]


# ---------------------------------------------------------------------------------------------- --debug
def test_traceback_only_with_debug(tmp_path):
    missing = tmp_path / "nope"
    plain = console("generate", "--model", missing, "--output", tmp_path / "x.png")
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip() == f"ldm-hub generate: error: model folder not found: {missing}"
    for args, env in ((["--debug"], None), ([], {"LDM_HUB_DEBUG": "1"})):
        debug = console("generate", "--model", missing, "--output", tmp_path / "x.png", *args, env=env)
        assert debug.returncode == 1 and "Traceback" in debug.stderr and "ModelFileError" in debug.stderr


def test_debug_before_the_command_and_in_process(capsys, tmp_path):
    from ldm_hub.loading import ModelFileError

    with pytest.raises(ModelFileError, match="model folder not found"):
        main(["--debug", "generate", "--model", str(tmp_path / "nope"), "--output", str(tmp_path / "x.png")])


def test_an_unexpected_error_is_one_line_too(capsys, monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise KeyError("oops")

    monkeypatch.setattr(LDMPipeline, "from_pretrained", broken)
    rc, _, err = cli(capsys, "generate", "--model", tmp_path, "--output", tmp_path / "x.png")
    line = one_error_line(err, "generate")
    assert rc == 1 and "internal error: KeyError: 'oops' (rerun with --debug for the traceback)" in line


# ---------------------------------------------------------------------------------------------- argparse
@pytest.mark.parametrize(
    "argv, match",
    [
        (["generate", "--steps", "x"], "argument --steps: invalid int value: 'x'"),
        (["generate", "--scheduler", "euler"], "argument --scheduler: invalid choice: 'euler'"),
        (["evaluate", "m"], "the following arguments are required: --task"),
    ],
)
def test_argparse_errors_are_one_line(capsys, argv, match):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    line = one_error_line(capsys.readouterr().err, argv[0])
    assert match in line and f"(see ldm-hub {argv[0]} --help)" in line


# ---------------------------------------------------------------------------------------------- negative numbers
@pytest.mark.parametrize(
    "argv, match",
    [
        (["train", "ldm", "--learning-rate", "-1e-4"], "--learning-rate: learning_rate must be > 0, got -0.0001"),
        (["train", "ldm", "--batch-size", "-2"], "--batch-size: batch_size must be >= 1, got -2"),
        (["train", "autoencoder", "--cond-dropout", "-0.5"], None),  # no such flag for the autoencoder
        (["generate", "--guidance-scale", "-1.5"], "--guidance-scale -1.5: must be >= 0"),
        (["generate", "--eta", "-.5"], "--eta -0.5: must be >= 0"),
        (["generate", "--height", "-64"], "--height -64: must be > 0"),
        (["generate", "--guidance-scale", "-inf"], "--guidance-scale -inf: must be a finite number"),
    ],
)
def test_negative_numbers_reach_the_range_check(capsys, tmp_path, argv, match):
    extra = ["--output-dir", str(tmp_path / "run"), "--autoencoder", str(tmp_path)] if argv[0] == "train" else []
    extra += ["--output", str(tmp_path / "x.png")] if argv[0] == "generate" else []
    if match is None:
        with pytest.raises(SystemExit):
            main(argv + extra)
        assert "unrecognized arguments: --cond-dropout" in capsys.readouterr().err
        return
    rc, _, err = cli(capsys, *argv, *extra)
    assert rc == 2 and match in one_error_line(err, argv[0])


# ---------------------------------------------------------------------------------------------- --config
@pytest.mark.parametrize(
    "text, match",
    [
        ('batch_size: "32x"\n', "key 'batch_size' must be an integer, got str '32x'"),
        ("learning_rate: [0.1]\n", "key 'learning_rate' must be a number, got list [0.1]"),
        ('random_flip: "yes please"\n', "key 'random_flip' must be true or false, got str 'yes please'"),
        ("max_grad_norm: abc\n", "key 'max_grad_norm' must be a number or null, got str 'abc'"),
        ("resolution: 64.5\n", "key 'resolution' must be an integer, got float 64.5"),
    ],
)
def test_config_file_value_of_the_wrong_type_names_the_key(capsys, tmp_path, text, match):
    (tmp_path / "c.yaml").write_text(text)
    rc, _, err = cli(capsys, "train", "ldm", "--config", tmp_path / "c.yaml", "--output-dir", tmp_path / "run")
    line = one_error_line(err, "train")
    assert rc == 2 and f"--config {tmp_path / 'c.yaml'}: {match}" in line


def test_config_file_yaml_exponent_is_a_number(capsys, tmp_path):
    (tmp_path / "c.yaml").write_text("learning_rate: 3e-4\n")  # YAML 1.1 reads it as a string
    rc, out, _ = cli(
        capsys, "train", "ldm", "--config", tmp_path / "c.yaml", "--output-dir", tmp_path / "run",
        "--autoencoder", tmp_path, "--print-config",
    )  # fmt: skip
    assert rc == 0 and json.loads(out)["learning_rate"] == 3e-4


def test_config_file_missing(capsys, tmp_path):
    rc, _, err = cli(capsys, "train", "ldm", "--config", tmp_path / "none.yaml")
    assert rc == 2 and f"--config {tmp_path / 'none.yaml'}: no such file" in one_error_line(err, "train")


# ---------------------------------------------------------------------------------------------- evaluate bars
def test_evaluate_fail_under_missed_exits_3(capsys, vq, tmp_path):
    rc, out, err = cli(
        capsys, "evaluate", vq, "--task", "autoencoder", "--num-samples", "2", "--batch-size", "2",
        "--fail-under", "psnr=1000", "--json", tmp_path / "r.json",
    )  # fmt: skip
    line = one_error_line(err, "evaluate")
    assert rc == 3 and "missed 1 bar(s): psnr" in line and "< 1000 (--fail-under)" in line
    result = json.loads((tmp_path / "r.json").read_text())  # the result is still written
    assert result["fail_under"]["psnr"] == {"value": result["metrics"]["psnr"], "threshold": 1000.0, "passed": False}


def test_evaluate_fail_under_met_exits_0(capsys, vq):
    rc, out, err = cli(
        capsys, "evaluate", vq, "--task", "autoencoder", "--num-samples", "2", "--batch-size", "2",
        "--fail-under", "psnr=-100",
    )  # fmt: skip
    assert rc == 0 and err == ""


def test_evaluate_fail_under_published_bars(capsys, vq):
    rc, _, err = cli(
        capsys, "evaluate", vq, "--task", "autoencoder", "--num-samples", "2", "--batch-size", "2",
        "--fail-under-bars",
    )  # fmt: skip
    line = one_error_line(err, "evaluate")  # an untrained autoencoder misses the 30 dB bar
    assert rc == 3 and "psnr" in line and "(the published bar)" in line


@pytest.mark.parametrize(
    "spec, match",
    [
        ("psnr", "--fail-under 'psnr': expected METRIC=VALUE"),
        ("psnr=high", "--fail-under 'psnr=high': expected METRIC=VALUE"),
        ("mean_iou=0.8", "--fail-under: task 'autoencoder' has no metric 'mean_iou' to bar; choose one of ('psnr',)"),
        ("psnr=nan", "--fail-under: the bar of 'psnr' must be a finite number, got nan"),
    ],
)
def test_evaluate_fail_under_bad_spec(capsys, vq, spec, match):
    rc, _, err = cli(capsys, "evaluate", vq, "--task", "autoencoder", "--fail-under", spec)
    assert rc == 2 and match in one_error_line(err, "evaluate")


# ---------------------------------------------------------------------------------------------- the CUDA-graph notice
def test_cuda_graph_fallback_notice_is_said_once_per_process(model, monkeypatch, caplog):
    from ldm_hub.pipelines import acceleration

    monkeypatch.setattr(acceleration, "_FALLBACK_NOTICES_GIVEN", set())  # as in a fresh process
    pipe = LDMPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    pipe.enable_cuda_graph()
    with caplog.at_level(logging.WARNING, logger="ldm_hub"):
        for _ in range(3):
            pipe(num_inference_steps=1, output_type="latent")
    notices = [r for r in caplog.records if "enable_cuda_graph" in r.getMessage()]
    assert len(notices) == 1 and "not CUDA" in notices[0].getMessage()
    assert notices[0].levelno == logging.WARNING
    other = LDMPipeline.from_pretrained(model)  # another pipeline in the same process: still said once
    other.set_progress_bar_config(disable=True)
    other.enable_cuda_graph()
    with caplog.at_level(logging.WARNING, logger="ldm_hub"):
        other(num_inference_steps=1, output_type="latent")
    assert len([r for r in caplog.records if "enable_cuda_graph" in r.getMessage()]) == 1
