"""A fake `pynvml` module (nvidia-ml-py) with NVML's units and error classes.

The error classes and constants are the real ones from the installed nvidia-ml-py, so
NVMLError(NVML_ERROR_NOT_SUPPORTED) is an NVMLError_NotSupported exactly as on a real GPU.
Units as NVML gives them: bytes, mW, mJ, °C, %.
"""

import types
from dataclasses import dataclass, field

import pynvml as real


@dataclass
class FakeNvidiaGpu:
    """One GPU as NVML shows it. Any reading may be a callable; `unsupported` names NVML functions
    that raise NVMLError_NotSupported on this GPU."""

    bus: int
    name: str = "NVIDIA H200"
    uuid: str = "GPU-8e3c5a1b-2f4d-6e7a-9b0c-1d2e3f4a5b6c"
    memory_total: object = 150_754_820_096  # bytes
    memory_used: object = 4_294_967_296
    util_gpu: object = 93
    util_memory: object = 41
    power_mw: object = 512_345
    temperature: object = 47
    energy_mj: object = 123_456_789
    processes: list = field(default_factory=list)  # [(pid, usedGpuMemory bytes or None)]
    unsupported: set = field(default_factory=set)

    def value(self, name):
        value = getattr(self, name)
        return value() if callable(value) else value


class _Handle:
    def __init__(self, gpu):
        self.gpu = gpu


def make_pynvml(gpus: list, init_error_code: int | None = None, driver: str = "570.124.06") -> types.ModuleType:
    module = types.ModuleType("pynvml")
    module.calls = []
    for name in dir(real):
        if name.startswith(("NVMLError", "NVML_")):
            setattr(module, name, getattr(real, name))
    handles = [_Handle(g) for g in gpus]

    def call(name, handle, build):
        module.calls.append(name)
        if name in handle.gpu.unsupported:
            raise real.NVMLError(real.NVML_ERROR_NOT_SUPPORTED)
        return build(handle.gpu)

    def nvml_init():
        module.calls.append("nvmlInit")
        if init_error_code is not None:
            raise real.NVMLError(init_error_code)

    module.nvmlInit = nvml_init
    module.nvmlShutdown = lambda: module.calls.append("nvmlShutdown")
    module.nvmlDeviceGetCount = lambda: len(handles)
    module.nvmlDeviceGetHandleByIndex = lambda i: handles[i]
    module.nvmlSystemGetDriverVersion = lambda: driver
    module.nvmlSystemGetNVMLVersion = lambda: "12." + driver
    module.nvmlDeviceGetName = lambda h: h.gpu.name
    module.nvmlDeviceGetUUID = lambda h: h.gpu.uuid
    module.nvmlDeviceGetPciInfo = lambda h: types.SimpleNamespace(
        busIdLegacy=f"0000:{h.gpu.bus:02X}:00.0",
        busId=f"00000000:{h.gpu.bus:02X}:00.0",
        domain=0,
        bus=h.gpu.bus,
        device=0,
        pciDeviceId=0x233510DE,
        pciSubSystemId=0x18F210DE,
    )
    module.nvmlDeviceGetMemoryInfo = lambda h: call(
        "nvmlDeviceGetMemoryInfo",
        h,
        lambda g: types.SimpleNamespace(
            total=g.value("memory_total"),
            free=g.value("memory_total") - g.value("memory_used"),
            used=g.value("memory_used"),
        ),
    )
    module.nvmlDeviceGetUtilizationRates = lambda h: call(
        "nvmlDeviceGetUtilizationRates",
        h,
        lambda g: types.SimpleNamespace(gpu=g.value("util_gpu"), memory=g.value("util_memory")),
    )
    module.nvmlDeviceGetPowerUsage = lambda h: call("nvmlDeviceGetPowerUsage", h, lambda g: g.value("power_mw"))
    module.nvmlDeviceGetTemperature = lambda h, sensor: call(
        "nvmlDeviceGetTemperature", h, lambda g: g.value("temperature")
    )
    module.nvmlDeviceGetTotalEnergyConsumption = lambda h: call(
        "nvmlDeviceGetTotalEnergyConsumption", h, lambda g: g.value("energy_mj")
    )
    module.nvmlDeviceGetComputeRunningProcesses = lambda h: call(
        "nvmlDeviceGetComputeRunningProcesses",
        h,
        lambda g: [
            types.SimpleNamespace(pid=pid, usedGpuMemory=used, gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF)
            for pid, used in g.processes
        ],
    )
    return module
