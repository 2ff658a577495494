"""The NVML backend against a fake pynvml with NVML's units and its real error classes."""

import logging
import os
import sys
import time

import pynvml
import pytest
from fakes.fake_amdsmi import FakeGcd, make_amdsmi
from fakes.fake_pynvml import FakeNvidiaGpu, make_pynvml
from fakes.fake_torch import FakeTorchGpu, make_torch
from fakes.sampling import device_rows, run_sampler

from ftcompare.device_pool import DevicePool
from ftcompare.job_devices import assign_job_devices
from ftcompare.telemetry import memory_figures, peak_memory

MIB = 2**20


@pytest.fixture
def use_nvml(monkeypatch):
    def install(gpus, **kwargs):
        module = make_pynvml(gpus, **kwargs)
        monkeypatch.setitem(sys.modules, "pynvml", module)
        return module

    return install


def test_units_bytes_milliwatts_and_millijoules_become_mib_watts_and_joules(tmp_path, use_nvml):
    gpu = FakeNvidiaGpu(
        bus=0x17,
        memory_total=150_754_820_096,
        memory_used=4_294_967_296,
        util_gpu=93,
        util_memory=41,
        power_mw=512_345,
        temperature=47,
        processes=[(1, 10 * MIB), (os.getpid(), 3_000 * MIB)],
    )
    start_mj = 123_456_789
    calls = iter(range(10_000))
    gpu.energy_mj = lambda: start_mj + next(calls) * 25_617  # 512.345 W for 0.05 s, in mJ
    module = use_nvml([gpu])
    (rows, summary), _ = run_sampler(tmp_path, "nvml")

    row = device_rows(rows, "cuda:0")[-1]
    assert row["backend"] == "nvml"
    assert (row["vram_used_mb"], row["vram_total_mb"], row["process_vram_mb"]) == ("4096.0", "143771.0", "3000.0")
    assert (row["util_pct"], row["mem_util_pct"], row["power_w"], row["temp_c"]) == ("93.0", "41.0", "512.345", "47.0")
    device = summary["devices"]["cuda:0"]
    assert device["name"] == "NVIDIA H200" and summary["driver_version"] == "570.124.06"
    assert device["pci_bus_id"] == "0000:17:00.0" and device["uuid"] == gpu.uuid
    energy = [float(r["energy_j"]) for r in device_rows(rows, "cuda:0")]
    assert energy[0] == 0.0 and energy[1] == pytest.approx(25.617)
    assert device["energy_method"].startswith("NVML total energy consumption counter")
    figures = memory_figures(summary)
    assert figures["device_vram_used_mb"] == {
        "value": 4096.0,
        "unit": "MiB",
        "source": "NVML device-wide memory used (nvmlDeviceGetMemoryInfo used), peak of samples (cuda:0 NVIDIA H200)",
    }
    assert figures["process_vram_mb"]["value"] == 3000.0
    assert peak_memory(summary) == (4096.0, figures["device_vram_used_mb"]["source"])
    assert module.calls[-1] == "nvmlShutdown"


def test_not_supported_energy_is_integrated_from_power_and_says_why(tmp_path, use_nvml):
    use_nvml([FakeNvidiaGpu(bus=0x17, power_mw=200_000, unsupported={"nvmlDeviceGetTotalEnergyConsumption"})])
    (rows, summary), _ = run_sampler(tmp_path, "nvml")
    gpu = device_rows(rows, "cuda:0")
    method = summary["devices"]["cuda:0"]["energy_method"]
    assert method.startswith("integrated power samples") and "NVMLError_NotSupported: Not Supported" in method
    expected = 200 * (float(gpu[-1]["time_s"]) - float(gpu[0]["time_s"]))
    assert float(gpu[-1]["energy_j"]) == pytest.approx(expected, abs=0.3)  # time_s is rounded to 1 ms


def test_not_supported_power_and_energy_leave_them_unmeasured(tmp_path, use_nvml):
    use_nvml(
        [
            FakeNvidiaGpu(
                bus=0x17,
                unsupported={
                    "nvmlDeviceGetPowerUsage",
                    "nvmlDeviceGetTotalEnergyConsumption",
                    "nvmlDeviceGetUtilizationRates",
                },
            )
        ]
    )
    (rows, summary), _ = run_sampler(tmp_path, "nvml")
    for row in device_rows(rows, "cuda:0"):
        assert row["power_w"] == row["energy_j"] == row["util_pct"] == row["mem_util_pct"] == ""
        assert row["vram_used_mb"] == "4096.0"
    device = summary["devices"]["cuda:0"]
    assert device["missing_figures"]["power_w"] == "nvml: NVMLError_NotSupported: Not Supported"
    assert device["energy_j"] is None and device["energy_method"].startswith("not measured")


def test_process_memory_nvml_cannot_tell_is_empty(tmp_path, use_nvml):
    use_nvml([FakeNvidiaGpu(bus=0x17, processes=[(os.getpid(), None)])])
    (rows, summary), _ = run_sampler(tmp_path, "nvml")
    assert {row["process_vram_mb"] for row in device_rows(rows, "cuda:0")} == {""}
    assert "not in NVML's compute process list" in summary["devices"]["cuda:0"]["missing_figures"]["process_vram_mb"]


def test_cuda_visible_devices_uuid_selects_by_uuid(tmp_path, use_nvml):
    use_nvml(
        [
            FakeNvidiaGpu(bus=0x17, uuid="GPU-aaaa1111-0000-0000-0000-000000000000", memory_used=1 * MIB),
            FakeNvidiaGpu(bus=0x65, uuid="GPU-bbbb2222-0000-0000-0000-000000000000", memory_used=2 * MIB),
        ]
    )
    (rows, summary), _ = run_sampler(tmp_path, "nvml", environ={"CUDA_VISIBLE_DEVICES": "GPU-bbbb2222"})
    assert set(summary["devices"]) == {"cuda:0", "cpu"}
    assert summary["devices"]["cuda:0"]["pci_bus_id"] == "0000:65:00.0"
    assert {row["vram_used_mb"] for row in device_rows(rows, "cuda:0")} == {"2.0"}
    assert summary["device_mapping"] == "CUDA_VISIBLE_DEVICES='GPU-bbbb2222'"


def test_real_nvml_without_a_driver_falls_back_and_says_why(tmp_path, monkeypatch):
    """The installed nvidia-ml-py on this machine, which has no NVIDIA driver."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("an NVIDIA driver is present")
    monkeypatch.setitem(sys.modules, "pynvml", pynvml)
    (rows, summary), _ = run_sampler(tmp_path, "nvml")
    assert summary["backend"] == "cpu"
    assert summary["backend_reasons"]["nvml"].startswith("not used: nvmlInit failed: NVMLError_")
    assert {row["device"] for row in rows} == {"cpu"}


def test_auto_probes_both_vendors_and_logs_why_one_was_not_chosen(tmp_path, use_nvml, monkeypatch, caplog):
    use_nvml([FakeNvidiaGpu(bus=0x17)])
    monkeypatch.setitem(sys.modules, "amdsmi", make_amdsmi("6.2", [FakeGcd(bdf="0000:c1:00.0")]))
    with caplog.at_level("INFO", logger="ftcompare.telemetry"):
        (_, summary), _ = run_sampler(tmp_path, "auto")
    assert summary["backend"] == "amdsmi"
    assert summary["backend_reasons"]["nvml"].startswith("works (1 device(s)) but amdsmi was preferred")
    assert "telemetry for test job: backend=auto -> amdsmi (with cpu)" in caplog.text
    assert "telemetry   torch: not used: torch.cuda.is_available() is False" in caplog.text


@pytest.mark.parametrize("torch_sees_it", [False, True], ids=["by-cuda-visible-devices", "by-torch-pci-bus-id"])
def test_a_job_given_gpu_2_of_4_by_the_pool_measures_gpu_2_alone(
    tmp_path, use_nvml, monkeypatch, caplog, torch_sees_it
):
    """NVML lists every GPU on the node whatever CUDA_VISIBLE_DEVICES says: the job the pool gave GPU 2
    must report GPU 2's memory, power and energy, nothing of the GPUs other jobs are using."""
    start = time.monotonic()
    gpus = [
        FakeNvidiaGpu(
            bus=bus,
            uuid=f"GPU-{i}{i}{i}{i}0000-0000-0000-0000-000000000000",
            memory_used=(i + 1) * 1024 * MIB,
            power_mw=(i + 1) * 100_000,
            # mJ since "the driver loaded", advancing as the GPU's own power says
            energy_mj=(lambda watts: lambda: int(5e6 + (time.monotonic() - start) * watts * 1000))((i + 1) * 100),
        )
        for i, bus in enumerate((0x17, 0x3A, 0x65, 0xB3))
    ]
    use_nvml(gpus)
    environ = {"FTCOMPARE_GPU_LOCK_DIR": str(tmp_path / "locks")}
    others = DevicePool(["0", "1"], tmp_path / "locks").take(2, "other jobs")
    job = assign_job_devices(1, environ, holder="train lora")
    assert job.devices == ("2",) and environ["CUDA_VISIBLE_DEVICES"] == "2"
    if torch_sees_it:  # what a CUDA torch shows once CUDA_VISIBLE_DEVICES=2: one device, cuda:0
        monkeypatch.setitem(sys.modules, "torch", make_torch([FakeTorchGpu(pci=(0, 0x65, 0), uuid=None)]))
    with caplog.at_level(logging.WARNING, logger="ftcompare.telemetry"):
        (rows, summary), _ = run_sampler(tmp_path, "nvml", environ=environ, job_devices=job.record())

    assert {row["device"] for row in rows} == {"cuda:0", "cpu"}
    assert {row["vram_used_mb"] for row in device_rows(rows, "cuda:0")} == {"3072.0"}
    assert {row["power_w"] for row in device_rows(rows, "cuda:0")} == {"300.0"}
    assert set(summary["devices"]) == {"cuda:0", "cpu"}
    device = summary["devices"]["cuda:0"]
    assert device["pci_bus_id"] == "0000:65:00.0" and device["vendor_index"] == 2
    how = "torch's devices matched to nvml by PCI bus id" if torch_sees_it else "CUDA_VISIBLE_DEVICES='2'"
    assert summary["device_mapping"] == how
    times = [float(row["time_s"]) for row in device_rows(rows, "cuda:0")]
    assert device["energy_method"].startswith("NVML total energy consumption counter")
    assert summary["energy_j"] == device["energy_j"] == pytest.approx(300 * (times[-1] - times[0]), rel=0.1, abs=1)
    assert memory_figures(summary)["device_vram_used_mb"]["value"] == 3072.0
    assert summary["job_devices"] == job.record() and summary["job_devices"]["devices"] == ["2"]
    assert not [r for r in caplog.records if "position" in r.getMessage()]  # CUDA_DEVICE_ORDER=PCI_BUS_ID was set
    job.lease.release()
    others.release()
