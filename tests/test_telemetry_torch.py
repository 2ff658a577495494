"""The torch backend: for real where torch has a GPU (and its CPU-only refusal here), and through a
fake torch.cuda for the GPU code paths."""

import sys
import time

import pytest
import torch
from fakes.fake_amdsmi import FakeGcd, make_amdsmi
from fakes.fake_pynvml import FakeNvidiaGpu, make_pynvml
from fakes.fake_torch import FakeTorchGpu, make_torch
from fakes.sampling import device_rows, read_outputs, run_sampler

from ftcompare.telemetry import TelemetrySampler, memory_figures, peak_memory
from ftcompare.telemetry.reading import BackendUnavailable
from ftcompare.telemetry.torch_backend import TorchBackend

MIB = 2**20
HAS_GPU = torch.cuda.is_available()


@pytest.mark.skipif(HAS_GPU, reason="this machine's torch has a GPU")
def test_real_cpu_only_torch_is_refused_with_its_reason(tmp_path):
    with pytest.raises(BackendUnavailable, match=r"torch.cuda.is_available\(\) is False \(torch .*\)"):
        TorchBackend.open()
    (rows, summary), _ = run_sampler(tmp_path, "torch")
    assert summary["backend"] == "cpu" and summary["backends_used"] == ["cpu"]
    assert summary["backend_reasons"]["amdsmi"] == "not used: telemetry.backend is torch"
    assert peak_memory(summary)[1] == "process RSS (with children), peak of samples"


@pytest.mark.skipif(not HAS_GPU, reason="needs torch with a CUDA or ROCm GPU")
def test_real_gpu_allocator_figures_and_peak(tmp_path):
    with TelemetrySampler(tmp_path / "t.csv", tmp_path / "t.json", backend="auto", interval_s=0.05) as sampler:
        sampler.set_phase("load")
        block = torch.empty(256 * MIB, dtype=torch.uint8, device="cuda:0")
        time.sleep(0.2)
        sampler.set_phase("train")
        sampler.reset_peaks()
        del block
        time.sleep(0.2)
    rows, summary = read_outputs(tmp_path)
    load_rows = [r for r in device_rows(rows, "cuda:0") if r["phase"] == "load"]
    assert max(float(r["torch_allocated_mb"]) for r in load_rows) >= 256
    assert summary["devices"]["cuda:0"]["torch_peaks_since"].startswith("reset_peaks() at")
    assert summary["devices"]["cuda:0"]["torch_max_allocated_mb"] < 256  # the block was freed before the reset
    value, source = peak_memory(summary)
    assert source.startswith("torch max_memory_allocated (cuda:0)")


def test_allocator_figures_peaks_and_reset_through_torch_cuda(tmp_path, monkeypatch):
    gpu = FakeTorchGpu(allocated=0, reserved=0)
    monkeypatch.setitem(sys.modules, "torch", make_torch([gpu]))
    with TelemetrySampler(
        tmp_path / "telemetry.csv", tmp_path / "telemetry.json", backend="torch", interval_s=0.05, environ={}
    ) as sampler:
        sampler.set_phase("load")
        time.sleep(0.12)
        gpu.allocated, gpu.reserved = 1000 * MIB, 1200 * MIB
        gpu.peak_allocated, gpu.peak_reserved = 1500 * MIB, 1600 * MIB
        time.sleep(0.12)
        sampler.set_phase("train")
        sampler.reset_peaks()
        gpu.allocated, gpu.peak_allocated = 800 * MIB, 900 * MIB
        time.sleep(0.12)
    rows, summary = read_outputs(tmp_path)
    gpu_rows = device_rows(rows, "cuda:0")
    assert gpu_rows[0]["torch_allocated_mb"] == "0.0" and gpu_rows[0]["vram_used_mb"] == ""  # no context yet
    assert gpu_rows[-1]["torch_allocated_mb"] == "800.0" and gpu_rows[-1]["torch_reserved_mb"] == "1200.0"
    assert gpu_rows[-1]["vram_used_mb"] == str(round((gpu.total - gpu.free) / MIB, 3))
    assert all(row["backend"] == "torch" for row in gpu_rows)
    assert len(gpu.resets) == 2  # at start, and by reset_peaks()
    device = summary["devices"]["cuda:0"]
    assert (device["torch_max_allocated_mb"], device["torch_max_reserved_mb"]) == (900.0, 1200.0)
    assert device["torch_peaks_since"].startswith("reset_peaks() at") and "(phase train)" in device["torch_peaks_since"]
    assert device["sources"]["vram_used_mb"] == "torch.cuda.mem_get_info total - free, device-wide (cuda:0)"
    value, source = peak_memory(summary)
    assert value == 900.0
    assert source.startswith("torch max_memory_allocated (cuda:0), since reset_peaks() at")
    assert memory_figures(summary)["torch_max_reserved_mb"]["value"] == 1200.0


def test_torch_ordinals_meet_nvml_devices_by_pci_bus_id(tmp_path, monkeypatch):
    # NVML lists 0x17 then 0x65; this job's torch sees only 0x65 (as cuda:0).
    monkeypatch.setitem(
        sys.modules,
        "pynvml",
        make_pynvml([FakeNvidiaGpu(bus=0x17, memory_used=1 * MIB), FakeNvidiaGpu(bus=0x65, memory_used=2 * MIB)]),
    )
    gpu = FakeTorchGpu(pci=(0, 0x65, 0), uuid=None, allocated=5 * MIB, peak_allocated=7 * MIB)
    monkeypatch.setitem(sys.modules, "torch", make_torch([gpu]))
    (rows, summary), _ = run_sampler(tmp_path, "auto")
    row = device_rows(rows, "cuda:0")[-1]
    assert row["backend"] == "nvml+torch"
    assert (row["vram_used_mb"], row["torch_allocated_mb"]) == ("2.0", "5.0")
    assert summary["device_mapping"] == "torch's devices matched to nvml by PCI bus id"
    assert summary["backend_reasons"]["amdsmi"].startswith("not used")
    assert summary["backends_used"] == ["nvml", "torch", "cpu"]
    figures = memory_figures(summary)
    # the earlier peak (7 MiB) was reset when the sampler started: "peak" is this job's
    assert peak_memory(summary) == (5.0, "torch max_memory_allocated (cuda:0), since job start")
    assert figures["device_vram_used_mb"]["value"] == 2.0


def test_rocm_torch_meets_amdsmi_devices_by_unique_id(tmp_path, monkeypatch):
    serial = "4b2f6a8e12345678"
    hip_uuid = serial.encode("ascii").hex()  # how torch prints a HIP device's uuid bytes
    monkeypatch.setitem(
        sys.modules,
        "amdsmi",
        make_amdsmi(
            "7.0",
            [
                FakeGcd(bdf="0000:0a:00.0", asic_serial="0x1111", vram_used_mb=1),
                FakeGcd(bdf="0000:c1:00.0", asic_serial="0x" + serial.upper(), vram_used_mb=2),
            ],
        ),
    )
    monkeypatch.setitem(
        sys.modules,
        "torch",
        make_torch([FakeTorchGpu(name="AMD Instinct MI300X", pci=None, uuid=hip_uuid)], hip="6.4.1"),
    )
    (rows, summary), _ = run_sampler(tmp_path, "auto")
    assert summary["devices"]["cuda:0"]["pci_bus_id"] == "0000:c1:00.0"
    assert summary["device_mapping"] == "torch's devices matched to amdsmi by unique id (UUID)"
    assert "ROCm/HIP 6.4.1 build" in summary["backend_reasons"]["torch"]
    assert {row["vram_used_mb"] for row in device_rows(rows, "cuda:0")} == {"2.0"}
