"""The sampler itself, on this machine's real process figures: schema, phases, failure, hang, outputs."""

import csv
import json
import sys
import threading
import time

import pytest
from fakes.fake_amdsmi import FakeGcd, make_amdsmi
from fakes.sampling import device_rows, read_outputs, run_sampler

from ftcompare.errors import FtcompareError
from ftcompare.telemetry import CSV_COLUMNS, TelemetrySampler, memory_figures, peak_memory

EXPECTED_COLUMNS = (
    "time_s",
    "phase",
    "device",
    "backend",
    "vram_used_mb",
    "vram_total_mb",
    "process_vram_mb",
    "torch_allocated_mb",
    "torch_reserved_mb",
    "util_pct",
    "mem_util_pct",
    "power_w",
    "temp_c",
    "energy_j",
    "rss_mb",
    "cpu_pct",
)
SUMMARY_KEYS = {
    "schema",
    "job",
    "backend",
    "backend_requested",
    "backends_used",
    "backend_reasons",
    "job_devices",
    "device_mapping",
    "device_names",
    "driver_version",
    "library_version",
    "started_at",
    "backend_setup_s",
    "duration_s",
    "interval_s",
    "achieved_interval_s",
    "sample_count",
    "sampling_cost_ms",
    "phases",
    "phase_durations_s",
    "devices",
    "energy_j",
    "energy_method",
    "read_errors",
    "job_failed",
    "sampler_stopped_cleanly",
    "memory_figures",
}


def sampler_threads():
    return [t for t in threading.enumerate() if t.name == "ftcompare-telemetry" and t.is_alive()]


def test_a_cpu_job_writes_the_fixed_schema_with_phases_and_a_summary(tmp_path):
    (rows, summary), sampler = run_sampler(
        tmp_path, "cpu", seconds=0.4, interval_s=0.05, phases=("load", "train", "save")
    )
    with open(tmp_path / "telemetry.csv", newline="") as handle:
        assert tuple(next(csv.reader(handle))) == EXPECTED_COLUMNS == CSV_COLUMNS
    assert {row["device"] for row in rows} == {"cpu"} and {row["backend"] for row in rows} == {"cpu"}
    assert [row["phase"] for row in rows][0] == "load" and rows[-1]["phase"] == "save"
    for row in rows:
        assert float(row["rss_mb"]) > 10
        assert all(row[c] == "" for c in EXPECTED_COLUMNS[4:14])  # no GPU figure, and no zero standing in for one
    assert rows[0]["cpu_pct"] == "" and all(row["cpu_pct"] != "" for row in rows[1:])
    times = [float(row["time_s"]) for row in rows]
    assert times == sorted(times) and times[0] < 0.05

    assert set(summary) == SUMMARY_KEYS
    assert summary == sampler.summary
    assert summary["backend"] == "cpu" and summary["job"] == "test job" and summary["job_failed"] is None
    assert [p["phase"] for p in summary["phases"]] == ["load", "train", "save"]
    assert set(summary["phase_durations_s"]) == {"load", "train", "save"}
    assert sum(summary["phase_durations_s"].values()) == pytest.approx(summary["duration_s"], abs=0.01)
    assert summary["sample_count"] == len(rows) >= 6
    assert summary["achieved_interval_s"] == pytest.approx(0.05, abs=0.02)
    rss = summary["devices"]["cpu"]["figures"]["rss_mb"]
    assert rss["unit"] == "MiB" and set(rss["by_phase"]) == {"load", "train", "save"}
    assert summary["energy_j"] is None and summary["energy_method"].startswith("not measured")
    assert peak_memory(summary) == (round(rss["peak"], 1), "process RSS (with children), peak of samples")
    assert sampler_threads() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["telemetry.csv", "telemetry.json"]  # no temp files


def test_a_job_that_raises_mid_training_leaves_complete_outputs_and_no_thread(tmp_path):
    csv_path, json_path = tmp_path / "telemetry.csv", tmp_path / "telemetry.json"
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        with TelemetrySampler(csv_path, json_path, backend="cpu", interval_s=0.05, job="train full") as sampler:
            sampler.set_phase("load")
            time.sleep(0.1)
            sampler.set_phase("train")
            time.sleep(0.1)
            raise RuntimeError("CUDA out of memory")
    assert sampler_threads() == []
    rows, summary = read_outputs(tmp_path)
    assert summary["job_failed"] == "RuntimeError: CUDA out of memory"
    assert summary["sampler_stopped_cleanly"] is True
    assert rows[-1]["phase"] == "train" and len(rows) == summary["sample_count"] >= 4
    assert float(rows[-1]["time_s"]) >= summary["phases"][-1]["start_s"]


def test_a_stuck_vendor_call_never_hangs_the_job(tmp_path, monkeypatch):
    release = threading.Event()
    gcd = FakeGcd(bdf="0000:c1:00.0")
    reads = iter(range(1_000_000))

    def vram_then_stuck():
        if next(reads) >= 2:
            release.wait(30)  # a driver call that does not come back
        return 2048

    gcd.vram_used_mb = vram_then_stuck
    module = make_amdsmi("6.2", [gcd])
    monkeypatch.setitem(sys.modules, "amdsmi", module)
    started = time.monotonic()
    try:
        (rows, summary), _ = run_sampler(tmp_path, "amdsmi", seconds=0.3, stop_timeout_s=0.3)
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert elapsed < 3
    assert summary["sampler_stopped_cleanly"] is False
    assert len(device_rows(rows, "cuda:0")) == 2 and summary["sample_count"] == 2
    assert "amdsmi_shut_down" not in module.calls  # never pulled from under a call in progress
    for thread in sampler_threads():
        thread.join(5)
    assert sampler_threads() == []


def test_backend_none_writes_a_header_and_a_summary_of_the_phases(tmp_path):
    (rows, summary), _ = run_sampler(tmp_path, "none", seconds=0.1)
    assert rows == [] and (tmp_path / "telemetry.csv").read_text().strip() == ",".join(EXPECTED_COLUMNS)
    assert summary["backend"] == "none" and summary["sample_count"] == 0 and summary["devices"] == {}
    assert [p["phase"] for p in summary["phases"]] == ["load", "train"]
    assert peak_memory(summary) == (None, "no memory figure was measured (telemetry backend: none)")


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(FtcompareError, match="telemetry.backend = 'rocm-smi': allowed are auto, amdsmi, nvml"):
        with TelemetrySampler(tmp_path / "t.csv", tmp_path / "t.json", backend="rocm-smi"):
            pass
    with pytest.raises(ValueError, match="interval_s must be positive"):
        TelemetrySampler(tmp_path / "t.csv", tmp_path / "t.json", interval_s=0)
    assert not (tmp_path / "t.csv").exists()


def test_the_job_log_names_the_chosen_backend_and_why_the_others_were_not(tmp_path, caplog):
    with caplog.at_level("INFO", logger="ftcompare.telemetry"):
        run_sampler(tmp_path, "cpu", seconds=0.05)
    assert "telemetry for test job: backend=cpu -> cpu" in caplog.text
    assert "telemetry   amdsmi: not used: telemetry.backend is cpu" in caplog.text
    assert "telemetry   cpu: used: RSS and CPU % of process" in caplog.text


def test_memory_figures_of_two_gpus_are_sums_that_say_so_and_survive_json():
    def gpu(name, used, total, allocated):
        return {
            "kind": "gpu",
            "name": name,
            "torch_max_allocated_mb": allocated,
            "torch_max_reserved_mb": allocated + 1,
            "torch_peaks_since": "reset_peaks() at 3.0 s (phase train)",
            "figures": {"vram_used_mb": {"peak": used}, "vram_total_mb": {"peak": total}},
            "sources": {"vram_used_mb": "amdsmi device-wide VRAM used (amdsmi_get_gpu_vram_usage vram_used)"},
        }

    summary = {
        "backend": "amdsmi",
        "devices": {
            "cuda:0": gpu("AMD Instinct MI250X", 60000.0, 65520.0, 50000.0),
            "cuda:1": gpu("AMD Instinct MI250X", 40000.0, 65520.0, 30000.0),
            "cpu": {"kind": "process", "figures": {"rss_mb": {"peak": 9000.0}}},
        },
    }
    figures = memory_figures(json.loads(json.dumps(summary)))
    assert figures["torch_max_allocated_mb"]["value"] == 80000.0
    assert figures["torch_max_allocated_mb"]["source"] == (
        "sum over cuda:0, cuda:1 of each device's torch max_memory_allocated, since reset_peaks() at 3.0 s "
        "(phase train) (per-device peaks, not simultaneous)"
    )
    assert figures["device_vram_used_pct"]["value"] == pytest.approx(76.3, abs=0.1)
    assert figures["rss_mb"]["value"] == 9000.0
    assert peak_memory(summary)[0] == 80000.0
