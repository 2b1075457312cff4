"""The speed benchmark runs and checks parity before timing (no time is asserted: these machines are noisy)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bench_vs_diffusers_runs(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            ROOT / "benchmarks" / "bench_vs_diffusers.py",
            "--config",
            "tiny",
            "--rounds",
            "2",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--json",
            out,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["parity_max_abs_diff"] < 1e-4
    assert result["ratio_median"] > 0 and result["ms_diffusers_median"] > 0
    assert "ratio ldm_hub/diffusers median" in proc.stdout


def test_bench_pipeline_and_vae_decode_cases_run(tmp_path):
    """The end-to-end pipeline case and the VAE decode case, CI-sized: parity holds, JSON written."""
    for case, extra in [("pipeline", ["--steps", "2"]), ("vae-decode", [])]:
        out = tmp_path / f"{case}.json"
        proc = subprocess.run(
            [sys.executable, ROOT / "benchmarks" / "bench_vs_diffusers.py", "--case", case, "--config", "tiny",
             "--rounds", "2", "--warmup", "1", "--threads", "1", "--fuse-qkv", "--json", out, *extra],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        result = json.loads(out.read_text())
        assert result["case"] == case and result["ratio_median"] > 0
        assert result["parity_max_abs_diff"] < (2 / 255 if case == "pipeline" else 1e-4)


@pytest.mark.slow
@pytest.mark.ci
def test_gpu_suite_code_paths_run_at_toy_size(tmp_path):
    """Issue 7's GPU suite (UNet, SR UNet, VAE decode and pipeline; ldm_hub eager and fast vs diffusers eager and
    best-tuned) at toy size on this CPU, compiled with dynamo's eager backend: every case builds, checks parity
    of the very forms it times, and reports; the JSON lists every case without an error."""
    out = tmp_path / "suite.json"
    proc = subprocess.run(
        [sys.executable, ROOT / "benchmarks" / "bench_vs_diffusers.py", "--suite", "toy", "--compile-backend", "eager",
         "--rounds", "1", "--warmup", "0", "--steps", "2", "--threads", "1", "--json", out],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert len(results) == 14 and not [r for r in results if "error" in r]
    assert {(r["ours"], r["theirs"]) for r in results} == {("eager", "eager"), ("fast", "best")}
    assert sum(r["channels_last_ldm_hub"] for r in results) == 1
    pipelines = [r for r in results if r["case"] == "pipeline"]
    for r in pipelines:
        assert set(r["phases_ldm_hub"]) == {"ms_text_encoder", "ms_loop", "ms_decode", "ms_total"}
    assert all(r["fuse_qkv"] for r in results if r["ours"] == "fast")
