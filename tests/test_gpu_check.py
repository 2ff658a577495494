"""bench/gpu_check.sh runs its whole path (on the CPU here) and writes what it promises."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def test_gpu_check_script_writes_its_files_and_summary(tmp_path):
    env = {
        **os.environ,
        "DEVICE": "cpu",
        "STEPS": "4",
        "PRETRAIN_STEPS": "2",
        "PYTHON": sys.executable,
        "HF_HUB_OFFLINE": "1",
    }
    result = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [
        "full_metrics.json",
        "full_telemetry.csv",
        "full_telemetry.json",
        "lora_metrics.json",
        "lora_telemetry.csv",
        "lora_telemetry.json",
        "lora_train.log",
        "summary.txt",
    ]
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "== lora: backend" in summary and "== full: backend" in summary
    assert "rss_mb" in summary
    assert json.loads((tmp_path / "out" / "lora_metrics.json").read_text())["train_steps"] == 4
