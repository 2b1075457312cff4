"""Issue 15, group 3: writes never destroy or leak.

``init`` / ``convert`` refuse a non-empty target unless ``--overwrite``; ``train`` refuses an output folder that
holds something other than its own run; ``save_pretrained`` never refuses but leaves no component folder the
new model_index.json does not list (and deletes nothing else); temporary siblings of killed saves are cleaned
up, never one in use; disk full / permission denied / a path under a regular file leave the previous files
intact, nothing behind, and a message naming the path.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ldm_hub.cli import main as cli_main
from ldm_hub.loading import (
    WRITER_LOCK,
    OutputExistsError,
    OutputWriteError,
    atomic_directory,
    atomic_write_bytes,
    check_output_folder,
    remove_stale_temporaries,
)
from ldm_hub.training.common import check_output_dir

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _cli(capsys, *argv) -> tuple[int, str]:
    code = cli_main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name)


@pytest.fixture(scope="module")
def pipelines():
    from ldm_hub.presets import build_pipeline

    return build_pipeline("text2im-tiny", seed=0), build_pipeline("unconditional-tiny", seed=0)


# ---------------------------------------------------------------------------------------------- refusing targets
def test_init_refuses_a_non_empty_output_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "model"
    out.mkdir()
    (out / "weights.safetensors").write_bytes(b"mine")
    code, err = _cli(capsys, "init", "unconditional-tiny", "--output", str(out))
    line = _one_line(err)
    assert code == 2 and line.startswith("ldm-hub init: error: --output") and str(out) in line
    assert "--overwrite" in line
    assert _snapshot(out) == {"weights.safetensors": b"mine"}
    assert _cli(capsys, "init", "unconditional-tiny", "--output", str(out), "--overwrite")[0] == 0
    assert (out / "model_index.json").is_file() and (out / "weights.safetensors").read_bytes() == b"mine"


def test_init_overwrite_leaves_no_stale_component_folder(tmp_path, capsys):
    """The issue's example: a text model, then an unconditional one over it: no cond_encoder / tokenizer left."""
    out = tmp_path / "model"
    assert _cli(capsys, "init", "text2im-tiny", "--output", str(out))[0] == 0
    assert (out / "cond_encoder").is_dir() and (out / "tokenizer").is_dir()
    assert _cli(capsys, "init", "unconditional-tiny", "--output", str(out), "--overwrite")[0] == 0
    index = json.loads((out / "model_index.json").read_text())
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == sorted(k for k, v in index.items() if not k.startswith("_") and None not in v)
    assert not (out / "cond_encoder").exists() and not (out / "tokenizer").exists()


def test_convert_refuses_a_non_empty_output_before_reading_anything(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    code, err = _cli(capsys, "convert", str(tmp_path / "absent.ckpt"), "--original-config", "x.yaml",
                     "--output", str(out))  # fmt: skip
    line = _one_line(err)
    assert code == 2 and line.startswith("ldm-hub convert: error: --output") and str(out) in line
    assert "--overwrite" in line and (out / "keep.txt").read_text() == "x"
    code, err = _cli(capsys, "convert", str(tmp_path / "absent.ckpt"), "--original-config", "x.yaml",
                     "--output", str(out), "--overwrite")  # fmt: skip
    assert code == 2 and "absent.ckpt" in _one_line(err)  # past the check, the missing file is named


def test_train_refuses_a_foreign_output_dir(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    code, err = _cli(capsys, "train", "ldm", "--output-dir", str(out), "--autoencoder", str(tmp_path / "ae"),
                     "--resume", "latest")  # fmt: skip
    line = _one_line(err)
    assert code == 2 and line.startswith("ldm-hub train: error: --output-dir") and str(out) in line
    assert "thesis.tex" in line and "--overwrite" in line
    assert _snapshot(out) == {"thesis.tex": b"years of work"}


def test_train_output_dir_of_its_own_run(tmp_path):
    """Resuming into its own run folder stays allowed; a previous run without --resume, or a run of the other
    trainer, is refused unless --overwrite."""
    out = tmp_path / "run"
    (out / "checkpoints" / "checkpoint-00000002").mkdir(parents=True)
    state = {"step": 2, "config": {"conditioning": "text", "output_dir": str(out)}}
    (out / "checkpoints" / "checkpoint-00000002" / "trainer_state.json").write_text(json.dumps(state))
    (out / "logs").mkdir()
    check_output_dir(out, kind="ldm", resume="latest", overwrite=False)
    check_output_dir(tmp_path / "new", kind="ldm", resume=None, overwrite=False)
    with pytest.raises(OutputExistsError, match=rf"--output-dir {out} holds a previous ldm run; pass --resume"):
        check_output_dir(out, kind="ldm", resume=None, overwrite=False)
    with pytest.raises(OutputExistsError, match=rf"--output-dir {out} holds a ldm training run, not a autoencoder"):
        check_output_dir(out, kind="autoencoder", resume="latest", overwrite=False)
    check_output_dir(out, kind="autoencoder", resume=None, overwrite=True)


def test_check_output_folder_names_the_flag_and_path(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match=rf"--output {tmp_path / 'file'}: exists and is not a folder"):
        check_output_folder(tmp_path / "file")
    with pytest.raises(OutputWriteError, match=rf"cannot write {tmp_path / 'file' / 'sub'}: {tmp_path / 'file'} is a"):
        check_output_folder(tmp_path / "file" / "sub")
    assert check_output_folder(tmp_path / "fresh") == tmp_path / "fresh"


# ---------------------------------------------------------------------------------------------- save_pretrained
def test_save_pretrained_removes_only_components_the_old_index_listed(tmp_path, pipelines):
    text, unconditional = pipelines
    out = tmp_path / "run"
    text.save_pretrained(out)
    for keep in ("checkpoints/checkpoint-00000002", "logs", "samples", ".git/objects", "extra"):
        (out / keep).mkdir(parents=True)
        (out / keep / "f").write_text(keep)
    (out / "notes.txt").write_text("mine")
    unconditional.save_pretrained(out)  # never refuses
    names = sorted(p.name for p in out.iterdir())
    assert "cond_encoder" not in names and "tokenizer" not in names
    for keep in ("checkpoints/checkpoint-00000002", "logs", "samples", ".git/objects", "extra"):
        assert (out / keep / "f").read_text() == keep
    assert (out / "notes.txt").read_text() == "mine"
    assert _leftovers(tmp_path) == []


def test_save_pretrained_without_an_old_index_deletes_nothing(tmp_path, pipelines):
    out = tmp_path / "folder"
    (out / "cond_encoder").mkdir(parents=True)  # not listed by any model_index.json: not ours to remove
    (out / "cond_encoder" / "f").write_text("x")
    pipelines[1].save_pretrained(out)
    assert (out / "cond_encoder" / "f").read_text() == "x"


def test_save_pretrained_same_components_keeps_all(tmp_path, pipelines):
    out = tmp_path / "m"
    pipelines[0].save_pretrained(out)
    before = sorted(p.name for p in out.iterdir())
    pipelines[0].save_pretrained(out)
    assert sorted(p.name for p in out.iterdir()) == before


# ---------------------------------------------------------------------------------------------- killed saves
KILLED_WRITER = r"""
import os, signal, sys
from ldm_hub.loading import atomic_directory
with atomic_directory(sys.argv[1]) as tmp:
    (tmp / "big.safetensors").write_bytes(b"0" * 1000)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_temporary_of_a_killed_save_is_removed_by_the_next(tmp_path):
    target = tmp_path / "model"
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)], env=ENV, check=False, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert len(_leftovers(tmp_path)) == 1 and not target.exists()
    with atomic_directory(target) as tmp:
        (tmp / "model_index.json").write_text("{}")
    assert _leftovers(tmp_path) == [] and (target / "model_index.json").is_file()


def test_temporary_in_use_is_never_removed(tmp_path):
    target = tmp_path / "model"
    with atomic_directory(target) as outer:  # a save in progress (same target, another writer)
        (outer / "a").write_text("1")
        assert remove_stale_temporaries(target) == []
        with atomic_directory(target) as inner:
            (inner / "b").write_text("2")
        assert outer.is_dir() and (outer / "a").read_text() == "1"
    assert (target / "a").is_file() and (target / "b").is_file() and _leftovers(tmp_path) == []


def test_temporary_of_an_unknown_writer_removed_only_after_an_hour(tmp_path):
    target = tmp_path / "model"
    fresh = Path(tempfile.mkdtemp(prefix=".model.tmp-", dir=tmp_path))  # no writer lock: an older ldm_hub's
    old = Path(tempfile.mkdtemp(prefix=".model.tmp-", dir=tmp_path))
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    other = Path(tempfile.mkdtemp(prefix=".other.tmp-", dir=tmp_path))
    os.utime(other, (two_hours_ago, two_hours_ago))
    assert remove_stale_temporaries(target) == [old]
    assert fresh.is_dir() and other.is_dir() and not old.exists()
    assert not (fresh / WRITER_LOCK).exists()


# ---------------------------------------------------------------------------------------------- failures
def test_disk_full_mid_save_keeps_the_previous_files(tmp_path, pipelines, monkeypatch):
    import safetensors.torch

    out = tmp_path / "model"
    pipelines[0].save_pretrained(out)
    before = _snapshot(out)
    real = safetensors.torch.save_file

    def full(tensors, filename, *args, **kwargs):
        Path(filename).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(filename))

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(OutputWriteError, match=rf"could not write {out}: No space left on device"):
        pipelines[1].save_pretrained(out)
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    assert _snapshot(out) == before and _leftovers(tmp_path) == []


def test_permission_denied_names_the_path_and_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "new" / "deeper" / "model"

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(target.parent))

    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    with pytest.raises(OutputWriteError, match=rf"could not write {target}: Permission denied \({target.parent}\)"):
        with atomic_directory(target):
            pass
    assert not (tmp_path / "new").exists()  # the parents it created are gone again
    monkeypatch.undo()

    def denied_write(self, data):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "img.png"))

    (tmp_path / "img.png").write_bytes(b"old")
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(PermissionError(errno.EACCES, "denied")))
    with pytest.raises(OutputWriteError, match=rf"could not write {tmp_path / 'img.png'}"):
        atomic_write_bytes(tmp_path / "img.png", b"new")
    assert (tmp_path / "img.png").read_bytes() == b"old" and _leftovers(tmp_path) == []


def test_output_under_a_regular_file(tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    below = tmp_path / "a-file" / "model"
    with pytest.raises(OutputWriteError, match=rf"cannot write {below}: {tmp_path / 'a-file'} is a file"):
        with atomic_directory(below):
            pass
    with pytest.raises(OutputWriteError, match=rf"cannot write {below / 'x.png'}: {tmp_path / 'a-file'} is a file"):
        atomic_write_bytes(below / "x.png", b"")
    code, err = _cli(capsys, "init", "unconditional-tiny", "--output", str(below))
    line = _one_line(err)
    assert code == 2 and str(below) in line and "is a file" in line
    assert (tmp_path / "a-file").read_text() == "x"
