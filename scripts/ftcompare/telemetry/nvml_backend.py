"""NVIDIA GPUs through NVML (the nvidia-ml-py package, module `pynvml`).

Units as NVML gives them: memory in bytes, power in mW, energy in mJ since the driver loaded,
temperature in °C, utilisation in %. A figure the GPU does not support raises NVMLError_NotSupported;
it is left empty and the reason recorded.
"""

import contextlib
import importlib
import os

from ftcompare.telemetry.devices import VendorDevice, normalise_pci_bus_id, pci_bus_id_from_parts
from ftcompare.telemetry.reading import BackendUnavailable, DeviceReading, describe_error, number
from ftcompare.telemetry.schema import MIB

NAME = "nvml"
COLUMNS = (
    "vram_used_mb",
    "vram_total_mb",
    "process_vram_mb",
    "util_pct",
    "mem_util_pct",
    "power_w",
    "temp_c",
    "energy_j",
)
ENERGY_COUNTER = "NVML total energy consumption counter (nvmlDeviceGetTotalEnergyConsumption)"


class NvmlBackend:
    name = NAME
    columns = COLUMNS
    energy_counter = ENERGY_COUNTER

    def __init__(self, module):
        self.nvml = module
        self.library_version = _call(module, "nvmlSystemGetNVMLVersion")

    @classmethod
    def open(cls):
        try:
            module = importlib.import_module("pynvml")
        except ModuleNotFoundError as error:
            raise BackendUnavailable(f"nvidia-ml-py (module pynvml) is not installed ({error})") from None
        except Exception as error:
            raise BackendUnavailable(f"import pynvml failed: {describe_error(error)}") from None
        try:
            module.nvmlInit()
        except Exception as error:
            raise BackendUnavailable(f"nvmlInit failed: {describe_error(error)}") from None
        backend = cls(module)
        try:
            count = module.nvmlDeviceGetCount()
            backend._handles = [module.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception as error:
            backend.close()
            raise BackendUnavailable(f"NVML device enumeration failed: {describe_error(error)}") from None
        if not backend._handles:
            backend.close()
            raise BackendUnavailable("NVML found no NVIDIA GPU")
        return backend

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.nvml.nvmlShutdown()

    def list_devices(self) -> list[VendorDevice]:
        return [
            VendorDevice(
                index=i,
                name=_text(_call(self.nvml, "nvmlDeviceGetName", h)),
                pci_bus_id=self._pci_bus_id(h),
                uuid=_text(_call(self.nvml, "nvmlDeviceGetUUID", h)),
                handle=h,
            )
            for i, h in enumerate(self._handles)
        ]

    def driver_version(self, device: VendorDevice) -> str | None:
        return _text(_call(self.nvml, "nvmlSystemGetDriverVersion"))

    def notes(self, device: VendorDevice) -> list[str]:
        return []

    def sources(self, device: VendorDevice) -> dict:
        return {
            "vram_used_mb": "NVML device-wide memory used (nvmlDeviceGetMemoryInfo used)",
            "vram_total_mb": "NVML memory total (nvmlDeviceGetMemoryInfo total)",
            "process_vram_mb": f"NVML compute process list, usedGpuMemory of this process (pid {os.getpid()})",
            "util_pct": "NVML utilization.gpu",
            "mem_util_pct": "NVML utilization.memory",
            "power_w": "NVML power usage (nvmlDeviceGetPowerUsage, mW / 1000)",
            "temp_c": "NVML GPU temperature (NVML_TEMPERATURE_GPU)",
        }

    def read(self, device: VendorDevice, label: str, read_log) -> dict:
        """One sample of `device`; `energy_counter_j` is the raw counter, for energy accounting."""
        nvml, h, values = self.nvml, device.handle, {}
        reading = DeviceReading(read_log, label, NAME)
        attempt = reading.attempt

        memory = attempt(("vram_used_mb", "vram_total_mb"), lambda: nvml.nvmlDeviceGetMemoryInfo(h))
        values["vram_used_mb"] = _mib(getattr(memory, "used", None))
        values["vram_total_mb"] = _mib(getattr(memory, "total", None))
        utilisation = attempt(("util_pct", "mem_util_pct"), lambda: nvml.nvmlDeviceGetUtilizationRates(h))
        values["util_pct"] = number(getattr(utilisation, "gpu", None))
        values["mem_util_pct"] = number(getattr(utilisation, "memory", None))
        milliwatts = attempt(("power_w",), lambda: number(nvml.nvmlDeviceGetPowerUsage(h)))
        values["power_w"] = milliwatts / 1000 if milliwatts is not None else None
        values["temp_c"] = attempt(
            ("temp_c",), lambda: number(nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU))
        )
        millijoules = attempt(("energy_j",), lambda: number(nvml.nvmlDeviceGetTotalEnergyConsumption(h)))
        values["energy_counter_j"] = millijoules / 1000 if millijoules is not None else None
        values["process_vram_mb"] = attempt(("process_vram_mb",), lambda: self._process_vram_mb(h))
        reasons = {
            "energy_counter_j": ("energy_j", "NVML gave no energy count"),
            "process_vram_mb": (
                "process_vram_mb",
                f"this process (pid {os.getpid()}) is not in NVML's "
                "compute process list, or its memory is not available (no CUDA context "
                "yet, or a container hides host PIDs)",
            ),
        }
        reading.record_missing(values, reasons, "NVML reported no value")
        return values

    def _process_vram_mb(self, handle):
        pid = os.getpid()
        for process in self.nvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if getattr(process, "pid", None) == pid:
                return _mib(getattr(process, "usedGpuMemory", None))  # None where NVML cannot tell
        return None

    def _pci_bus_id(self, handle):
        info = _call(self.nvml, "nvmlDeviceGetPciInfo", handle)
        if info is None:
            return None
        parts = [getattr(info, key, None) for key in ("domain", "bus", "device")]
        if all(isinstance(p, int) for p in parts):
            return pci_bus_id_from_parts(*parts)
        return normalise_pci_bus_id(_text(getattr(info, "busId", None)))


def _call(module, function_name, *args):
    """A static-information call; None when it is missing or fails."""
    function = getattr(module, function_name, None)
    if function is None:
        return None
    try:
        return function(*args)
    except Exception:
        return None


def _text(value):
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value) if value not in (None, "") else None


def _mib(value):
    value = number(value)
    return value / MIB if value is not None else None
