"""The amdsmi backend against fake modules shaped like amdsmi 5.7, 6.0, 6.2 and 7.0."""

import os
import sys
import time
from pathlib import Path

import pytest
from fakes.fake_amdsmi import STATUS_INIT_ERROR, STATUS_NOT_SUPPORTED, AmdSmiLibraryException, FakeGcd, make_amdsmi
from fakes.sampling import device_rows, run_sampler

from ftcompare import node_gpus
from ftcompare.device_pool import DevicePool
from ftcompare.job_devices import assign_job_devices
from ftcompare.telemetry import memory_figures, peak_memory

GIB = 2**30


@pytest.fixture
def use_amdsmi(monkeypatch):
    def install(version, gcds, **kwargs):
        module = make_amdsmi(version, gcds, **kwargs)
        monkeypatch.setitem(sys.modules, "amdsmi", module)
        return module

    return install


def power_from_counter(gcd, watts):
    """An energy accumulator that advances like a device drawing `watts`."""
    start = time.monotonic()
    return lambda: int((time.monotonic() - start) * watts / (gcd.counter_resolution * 1e-6)) + 10_000


@pytest.mark.parametrize(
    "version, market_name, power_key",
    [
        ("5.7", "AMD Instinct MI250X", "average_socket_power"),
        ("6.0", "AMD Instinct MI250X", "average_socket_power"),
        ("6.0", "AMD Instinct MI300X", "current_socket_power"),
        ("6.2", "AMD Instinct MI300X", "current_socket_power"),
        ("7.0", "AMD Instinct MI300X", "socket_power"),
    ],
)
def test_every_version_fills_the_csv_in_documented_units(tmp_path, use_amdsmi, version, market_name, power_key):
    gcd = FakeGcd(
        bdf="0000:c1:00.0",
        market_name=market_name,
        vram_used_mb=2048,
        vram_total_mb=65520,
        gfx_activity=87,
        umc_activity=31,
        power_w=450,
        temperatures={"EDGE": 44, "JUNCTION": 61, "HOTSPOT": 61},
        processes=[(4321, GIB), (os.getpid(), 3 * GIB // 2)],
    )
    module = use_amdsmi(version, [gcd])
    (rows, summary), _ = run_sampler(tmp_path, "amdsmi")

    gpu = device_rows(rows, "cuda:0")
    assert len(gpu) >= 3 and all(row["backend"] == "amdsmi" for row in gpu)
    row = gpu[-1]
    assert (row["vram_used_mb"], row["vram_total_mb"], row["process_vram_mb"]) == ("2048.0", "65520.0", "1536.0")
    assert (row["util_pct"], row["mem_util_pct"], row["power_w"], row["temp_c"]) == ("87.0", "31.0", "450.0", "61.0")
    assert row["torch_allocated_mb"] == row["rss_mb"] == ""  # torch sees no GPU here; RSS is on the cpu row
    assert float(device_rows(rows, "cpu")[-1]["rss_mb"]) > 0

    device = summary["devices"]["cuda:0"]
    assert summary["backend"] == "amdsmi" and device["name"] == market_name
    assert device["pci_bus_id"] == "0000:c1:00.0"
    assert device["driver_version"] == ("6.2.4" if version == "5.7" else "6.8.5")
    assert device["sources"]["power_w"] == f"amdsmi_get_power_info {power_key}"
    assert device["sources"]["temp_c"].startswith(
        "amdsmi_get_temp_metric hotspot" if version != "5.7" else "amdsmi_get_temp_metric junction"
    )
    assert device["figures"]["vram_used_mb"] == {
        "peak": 2048.0,
        "mean": 2048.0,
        "samples": len(gpu),
        "unit": "MiB",
        "by_phase": {"load": {"peak": 2048.0, "mean": 2048.0}, "train": {"peak": 2048.0, "mean": 2048.0}},
    }
    figures = memory_figures(summary)
    assert figures["device_vram_used_mb"]["value"] == 2048.0
    assert figures["device_vram_used_mb"]["source"].startswith("amdsmi device-wide VRAM used")
    assert figures["device_vram_used_pct"]["value"] == pytest.approx(100 * 2048 / 65520, abs=0.1)
    assert peak_memory(summary)[0] == 2048.0  # no torch GPU here: the device-wide figure
    assert module.calls[-1] == "amdsmi_shut_down"


def test_na_values_and_missing_readings_leave_cells_empty_never_zero(tmp_path, use_amdsmi):
    gcd = FakeGcd(
        bdf="0000:c1:00.0", vram_used_mb="N/A", umc_activity="N/A", power_w="N/A", temperatures={}, energy_ticks="N/A"
    )
    use_amdsmi("6.2", [gcd])
    (rows, summary), _ = run_sampler(tmp_path, "amdsmi")
    for row in device_rows(rows, "cuda:0"):
        assert row["vram_used_mb"] == row["mem_util_pct"] == row["power_w"] == row["temp_c"] == row["energy_j"] == ""
        assert row["process_vram_mb"] == ""
        assert row["vram_total_mb"] == "196592.0" and row["util_pct"] == "87.0"
    missing = summary["devices"]["cuda:0"]["missing_figures"]
    assert missing["vram_used_mb"] == "amdsmi reported no value (N/A or key absent)"
    assert "AMDSMI_STATUS_NOT_SUPPORTED" in missing["temp_c"]
    assert "not in amdsmi's process list" in missing["process_vram_mb"]
    assert summary["energy_j"] is None and summary["energy_method"].startswith("not measured")
    assert "device_vram_used_mb" not in memory_figures(summary)


def test_library_exceptions_are_recorded_and_the_other_figures_still_sampled(tmp_path, use_amdsmi):
    gcd = FakeGcd(
        bdf="0000:c1:00.0",
        fail={
            "amdsmi_get_power_info": AmdSmiLibraryException(STATUS_NOT_SUPPORTED),
            "amdsmi_get_gpu_process_list": RuntimeError("KFD went away"),
        },
    )
    use_amdsmi("7.0", [gcd])
    (rows, summary), _ = run_sampler(tmp_path, "amdsmi")
    gpu = device_rows(rows, "cuda:0")
    assert all(row["power_w"] == "" and row["vram_used_mb"] == "2048.0" for row in gpu)
    errors = summary["read_errors"]["cuda:0"]
    assert errors["power_w"]["count"] == len(gpu)
    assert errors["power_w"]["first"].startswith("amdsmi: AmdSmiLibraryException")
    assert errors["process_vram_mb"]["first"] == "amdsmi: RuntimeError: KFD went away"


def test_import_without_native_library_keeps_stdout_clean_and_falls_back(tmp_path, monkeypatch, capfd):
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "fakes" / "broken_amdsmi"))
    for name in ("amdsmi", "amdsmi.amdsmi_wrapper"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    try:
        (rows, summary), _ = run_sampler(tmp_path, "amdsmi")
    finally:
        for name in ("amdsmi", "amdsmi.amdsmi_wrapper"):
            sys.modules.pop(name, None)
    out, _ = capfd.readouterr()
    assert out == ""
    reason = summary["backend_reasons"]["amdsmi"]
    assert "KeyError" in reason and "Unable to find amdsmi library" in reason
    assert summary["backend"] == "cpu" and {row["device"] for row in rows} == {"cpu"}


def test_init_failure_falls_back_with_the_reason(tmp_path, use_amdsmi, caplog):
    use_amdsmi("6.2", [FakeGcd(bdf="0000:c1:00.0")], init_error=AmdSmiLibraryException(STATUS_INIT_ERROR))
    with caplog.at_level("INFO", logger="ftcompare.telemetry"):
        (_, summary), _ = run_sampler(tmp_path, "amdsmi")
    assert summary["backend"] == "cpu"
    assert summary["backend_reasons"]["amdsmi"].startswith("not used: amdsmi_init failed: AmdSmiLibraryException")
    assert "telemetry.backend is amdsmi but amdsmi_init failed" in caplog.text


def test_a_consistent_energy_counter_is_used(tmp_path, use_amdsmi):
    gcd = FakeGcd(bdf="0000:c1:00.0", power_w=450)
    gcd.energy_ticks = power_from_counter(gcd, 450)
    use_amdsmi("6.2", [gcd])
    (rows, summary), _ = run_sampler(tmp_path, "amdsmi", seconds=0.4)
    energy = [float(row["energy_j"]) for row in device_rows(rows, "cuda:0")]
    assert energy[0] == 0.0 and energy == sorted(energy)
    device = summary["devices"]["cuda:0"]
    assert device["energy_method"].startswith("amdsmi energy counter (accumulator × counter_resolution), consistent")
    assert device["energy_j"] == pytest.approx(energy[-1], abs=0.01)
    assert device["energy_j"] == pytest.approx(450 * summary["duration_s"], rel=0.3)


def test_an_energy_counter_going_backwards_is_replaced_by_integrated_power(tmp_path, use_amdsmi):
    ticks = iter(range(10_000_000, 0, -50_000))
    gcd = FakeGcd(bdf="0000:c1:00.0", power_w=300, energy_ticks=lambda: next(ticks))
    use_amdsmi("5.7", [gcd])
    (rows, summary), _ = run_sampler(tmp_path, "amdsmi")
    gpu = device_rows(rows, "cuda:0")
    method = summary["devices"]["cuda:0"]["energy_method"]
    assert method.startswith("integrated power samples (trapezoid rule)") and "went backwards" in method
    expected = 300 * (float(gpu[-1]["time_s"]) - float(gpu[0]["time_s"]))
    assert float(gpu[-1]["energy_j"]) == pytest.approx(expected, abs=0.5)  # time_s is rounded to 1 ms


def test_an_mi250_shows_two_gcds_each_reported_and_said_so(tmp_path, use_amdsmi):
    first = FakeGcd(
        bdf="0000:c1:00.0",
        market_name="AMD Instinct MI250X",
        asic_serial="0x1111",
        power_w=420,
        temperatures={"EDGE": 40, "JUNCTION": 52},
        vram_total_mb=65520,
        vram_used_mb=30000,
    )
    first.energy_ticks = power_from_counter(first, 420)
    second = FakeGcd(
        bdf="0000:c6:00.0",
        market_name="AMD Instinct MI250X",
        asic_serial="0x2222",
        power_w=0,
        temperatures={"EDGE": 38, "JUNCTION": 47},
        vram_total_mb=65520,
        vram_used_mb=10,
        energy_ticks=123,
    )
    use_amdsmi("6.0", [first, second])
    (rows, summary), _ = run_sampler(tmp_path, "amdsmi")
    assert set(summary["devices"]) == {"cuda:0", "cuda:1", "cpu"}
    for label in ("cuda:0", "cuda:1"):
        assert "one GCD of an MI250/MI250X" in summary["devices"][label]["notes"][0]
        assert device_rows(rows, label)
    assert summary["devices"]["cuda:1"]["energy_j"] == 0.0
    assert device_rows(rows, "cuda:1")[-1]["power_w"] == "0.0"  # a real reading, not a gap
    figures = memory_figures(summary)
    assert figures["device_vram_used_mb"]["value"] == 30010.0
    assert figures["device_vram_used_mb"]["source"].startswith("sum over cuda:0 AMD Instinct MI250X, cuda:1")


def test_visible_devices_are_matched_by_bus_id_through_the_kfd_topology(tmp_path, use_amdsmi):
    gcds = [
        FakeGcd(bdf="0000:c1:00.0", asic_serial="0x1111", vram_used_mb=1),
        FakeGcd(bdf="0000:0a:00.0", asic_serial="0x2222", vram_used_mb=2),
        FakeGcd(bdf="0000:45:00.0", asic_serial="0x3333", vram_used_mb=3),
    ]
    use_amdsmi("7.0", gcds)
    kfd = tmp_path / "kfd"
    for node, (gpu_id, bus, unique) in enumerate([(0, 0, 0), (7, 0x45, 0x3333), (8, 0xC1, 0x1111), (9, 0x0A, 0x2222)]):
        (kfd / str(node)).mkdir(parents=True)
        (kfd / str(node) / "gpu_id").write_text(str(gpu_id))
        (kfd / str(node) / "properties").write_text(f"location_id {bus << 8}\ndomain 0\nunique_id {unique}\n")
    environ = {"ROCR_VISIBLE_DEVICES": "2,0", "HIP_VISIBLE_DEVICES": "1"}
    (rows, summary), _ = run_sampler(tmp_path, "amdsmi", environ=environ, kfd_root=kfd)
    assert summary["devices"]["cuda:0"]["pci_bus_id"] == "0000:45:00.0"
    assert {row["vram_used_mb"] for row in device_rows(rows, "cuda:0")} == {"3.0"}
    assert set(summary["devices"]) == {"cuda:0", "cpu"}


def test_a_job_given_hip_device_2_by_the_pool_measures_that_gcd_alone(tmp_path, use_amdsmi, monkeypatch):
    """amdsmi lists every GCD on the node in its own order; the pool's HIP_VISIBLE_DEVICES=2 is HIP's third
    device (KFD topology order), and only that GCD is sampled."""
    gcds = [
        FakeGcd(bdf=f"0000:{bus:02x}:00.0", vram_used_mb=bus, power_w=100 + bus) for bus in (0xC1, 0x0A, 0x45, 0x8D)
    ]
    use_amdsmi("7.0", gcds)
    monkeypatch.setattr(node_gpus, "PROBES", (("amd", node_gpus._count_amdsmi),))
    kfd = tmp_path / "kfd"
    for node, bus in enumerate([0, 0x0A, 0x45, 0x8D, 0xC1]):  # node 0 is the CPU; HIP device 2 is at 0x8d
        (kfd / str(node)).mkdir(parents=True)
        (kfd / str(node) / "gpu_id").write_text(str(node))
        (kfd / str(node) / "properties").write_text(f"location_id {bus << 8}\ndomain 0\nunique_id 0\n")
    environ = {"FTCOMPARE_GPU_LOCK_DIR": str(tmp_path / "locks")}
    others = DevicePool(["0", "1"], tmp_path / "locks").take(2, "other jobs")
    job = assign_job_devices(1, environ, holder="generate lora")
    assert environ["HIP_VISIBLE_DEVICES"] == "2"
    (rows, summary), _ = run_sampler(tmp_path, "amdsmi", environ=environ, kfd_root=kfd, job_devices=job.record())
    assert {row["device"] for row in rows} == {"cuda:0", "cpu"}
    assert summary["devices"]["cuda:0"]["pci_bus_id"] == "0000:8d:00.0"
    assert {row["vram_used_mb"] for row in device_rows(rows, "cuda:0")} == {str(float(0x8D))}
    assert summary["job_devices"]["devices"] == ["2"]
    job.lease.release()
    others.release()
