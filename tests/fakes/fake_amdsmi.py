"""A fake `amdsmi` module that answers with the return shapes of real amdsmi versions.

Shapes follow ROCm/amdsmi's py-interface/amdsmi_interface.py of each era:
- "5.7": power info has only `average_socket_power`; energy count under the key `power`; the process
  list returns handles for amdsmi_get_gpu_process_info; amdsmi_get_gpu_driver_version; temperature
  types EDGE, JUNCTION, VRAM.
- "6.0": `current_socket_power` and `average_socket_power`, one of them "N/A" by chip (MI300 reports
  current, MI200 average); energy still under `power`; process list still handles;
  amdsmi_get_gpu_driver_info; HOTSPOT temperature type.
- "6.2": as 6.0, but energy under `energy_accumulator` and the process list returns dicts.
- "7.0": adds `socket_power` (and amdsmi_get_gpu_enumeration_info with hip_uuid); the per-chip
  current/average keys are "N/A" where the chip has no such reading.
Unsupported readings raise AmdSmiLibraryException, as the real library does.
"""

import itertools
import types
from dataclasses import dataclass, field
from enum import IntEnum

VERSIONS = ("5.7", "6.0", "6.2", "7.0")
STATUS_NOT_SUPPORTED = 2
STATUS_INIT_ERROR = 34


class AmdSmiException(Exception):
    pass


class AmdSmiLibraryException(AmdSmiException):
    def __init__(self, err_code):
        super().__init__(err_code)
        self.err_code = err_code
        self.err_info = {
            STATUS_NOT_SUPPORTED: "AMDSMI_STATUS_NOT_SUPPORTED - Feature not supported",
            STATUS_INIT_ERROR: "AMDSMI_STATUS_DRIVER_NOT_LOADED - Driver not loaded",
        }.get(err_code, "")

    def __str__(self):
        return f"Error code:\n\t{self.err_code} | {self.err_info}"


@dataclass
class FakeGcd:
    """One GPU (or one GCD of an MI250) as amdsmi shows it. Any reading may be a callable."""

    bdf: str
    market_name: str = "AMD Instinct MI300X"
    uuid: str = "5fff74a1-0000-1000-80ef-1b2f7a8c9d01"
    asic_serial: str = "0x4B2F6A8E12345678"
    vram_total_mb: object = 196592
    vram_used_mb: object = 2048
    gfx_activity: object = 87
    umc_activity: object = 31
    power_w: object = 450
    temperatures: dict = field(default_factory=lambda: {"HOTSPOT": 61, "JUNCTION": 61})
    energy_ticks: object = None  # accumulator value; None: advance by power at each call
    counter_resolution: float = 15.259
    processes: list = field(default_factory=list)  # [(pid, vram bytes)]
    fail: dict = field(default_factory=dict)  # function name -> exception to raise

    def __post_init__(self):
        self._ticks = itertools.count(1_000_000, 65_536)

    def value(self, name):
        value = getattr(self, name)
        return value() if callable(value) else value

    @property
    def chip(self):
        return "MI300" if "MI300" in self.market_name.upper() else "MI200"


class _Handle:
    """amdsmi_processor_handle: opaque to callers."""

    def __init__(self, gcd):
        self.gcd = gcd


def make_amdsmi(version: str, gcds: list, init_error: Exception | None = None) -> types.ModuleType:
    if version not in VERSIONS:
        raise ValueError(f"unknown fake amdsmi version {version}")
    old = version in ("5.7",)
    module = types.ModuleType("amdsmi")
    module.calls = []
    module.AmdSmiException = AmdSmiException
    module.AmdSmiLibraryException = AmdSmiLibraryException
    if old:
        module.AmdSmiTemperatureType = IntEnum("AmdSmiTemperatureType", {"EDGE": 0, "JUNCTION": 1, "VRAM": 2})
    else:
        module.AmdSmiTemperatureType = IntEnum(
            "AmdSmiTemperatureType", {"EDGE": 0, "HOTSPOT": 1, "JUNCTION": 1, "VRAM": 2}
        )
    module.AmdSmiTemperatureMetric = IntEnum("AmdSmiTemperatureMetric", {"CURRENT": 0, "MAX": 1})
    handles = [_Handle(g) for g in gcds]

    def call(name, handle, build):
        module.calls.append(name)
        error = handle.gcd.fail.get(name)
        if error is not None:
            raise error
        return build(handle.gcd)

    def amdsmi_init(flags=None):
        module.calls.append("amdsmi_init")
        if init_error is not None:
            raise init_error

    module.amdsmi_init = amdsmi_init
    module.amdsmi_shut_down = lambda: module.calls.append("amdsmi_shut_down")
    module.amdsmi_get_processor_handles = lambda: list(handles)
    module.amdsmi_get_lib_version = lambda: {
        "year": 23 if old else 24,
        "major": int(version[0]),
        "minor": int(version[2]),
        "release": 0,
        "build": "fake",
    }
    module.amdsmi_get_gpu_device_bdf = lambda h: call("amdsmi_get_gpu_device_bdf", h, lambda g: g.bdf)
    module.amdsmi_get_gpu_device_uuid = lambda h: call("amdsmi_get_gpu_device_uuid", h, lambda g: g.uuid)

    def asic_info(g):
        info = {
            "market_name": g.market_name,
            "family": 141,
            "vendor_id": 4098,
            "device_id": 29856,
            "rev_id": 0,
            "asic_serial": g.asic_serial,
        }
        if not old:
            info.update(
                {
                    "vendor_name": "Advanced Micro Devices Inc. [AMD/ATI]",
                    "subvendor_id": 4098,
                    "oam_id": 0,
                    "num_compute_units": 304,
                    "target_graphics_version": "gfx942",
                }
            )
        return info

    module.amdsmi_get_gpu_asic_info = lambda h: call("amdsmi_get_gpu_asic_info", h, asic_info)
    module.amdsmi_get_gpu_vram_usage = lambda h: call(
        "amdsmi_get_gpu_vram_usage",
        h,
        lambda g: {"vram_total": g.value("vram_total_mb"), "vram_used": g.value("vram_used_mb")},
    )
    module.amdsmi_get_gpu_activity = lambda h: call(
        "amdsmi_get_gpu_activity",
        h,
        lambda g: {
            "gfx_activity": g.value("gfx_activity"),
            "umc_activity": g.value("umc_activity"),
            "mm_activity": 0 if old else "N/A",
        },
    )

    def power_info(g):
        watts = g.value("power_w")
        if old:
            return {
                "average_socket_power": watts,
                "gfx_voltage": 806,
                "soc_voltage": 918,
                "mem_voltage": 1250,
                "power_limit": 560,
            }
        info = {
            "current_socket_power": watts if g.chip == "MI300" else "N/A",
            "average_socket_power": watts if g.chip == "MI200" else "N/A",
            "gfx_voltage": "N/A",
            "soc_voltage": "N/A",
            "mem_voltage": "N/A",
            "power_limit": 750,
        }
        if version == "7.0":
            info = {"socket_power": watts, **info}
        return info

    module.amdsmi_get_power_info = lambda h: call("amdsmi_get_power_info", h, power_info)

    def temperature(g, sensor_type, metric):
        names = [member.name for member in module.AmdSmiTemperatureType if member == sensor_type]
        for name in names:
            if name in g.temperatures:
                value = g.temperatures[name]
                return value() if callable(value) else value
        raise AmdSmiLibraryException(STATUS_NOT_SUPPORTED)

    module.amdsmi_get_temp_metric = lambda h, sensor_type, metric: call(
        "amdsmi_get_temp_metric", h, lambda g: temperature(g, sensor_type, metric)
    )

    def energy(g):
        ticks = g.value("energy_ticks") if g.energy_ticks is not None else next(g._ticks)
        key = "power" if version in ("5.7", "6.0") else "energy_accumulator"
        return {key: ticks, "counter_resolution": g.counter_resolution, "timestamp": 1_700_000_000_000_000}

    module.amdsmi_get_energy_count = lambda h: call("amdsmi_get_energy_count", h, energy)

    def process_entry(pid, vram):
        return {
            "name": "python3",
            "pid": pid,
            "mem": vram + 4096,
            "engine_usage": {"gfx": 1_000_000, "enc": 0},
            "memory_usage": {"gtt_mem": 4096, "cpu_mem": 0, "vram_mem": vram},
        }

    if version in ("5.7", "6.0"):
        module.amdsmi_get_gpu_process_list = lambda h: call(
            "amdsmi_get_gpu_process_list", h, lambda g: [("process-handle", pid) for pid, _ in g.processes]
        )
        module.amdsmi_get_gpu_process_info = lambda h, p: call(
            "amdsmi_get_gpu_process_info", h, lambda g: process_entry(p[1], dict(g.processes)[p[1]])
        )
    else:
        module.amdsmi_get_gpu_process_list = lambda h: call(
            "amdsmi_get_gpu_process_list", h, lambda g: [process_entry(pid, vram) for pid, vram in g.processes]
        )

    if old:
        module.amdsmi_get_gpu_driver_version = lambda h: call("amdsmi_get_gpu_driver_version", h, lambda g: "6.2.4")
    else:
        module.amdsmi_get_gpu_driver_info = lambda h: call(
            "amdsmi_get_gpu_driver_info",
            h,
            lambda g: {"driver_name": "amdgpu", "driver_version": "6.8.5", "driver_date": "2015/01/01 00:00"},
        )
        module.amdsmi_get_gpu_board_info = lambda h: call(
            "amdsmi_get_gpu_board_info",
            h,
            lambda g: {
                "model_number": "N/A",
                "product_serial": "N/A",
                "fru_id": "N/A",
                "product_name": g.market_name,
                "manufacturer_name": "AMD",
            },
        )
    if version == "7.0":
        module.amdsmi_get_gpu_enumeration_info = lambda h: call(
            "amdsmi_get_gpu_enumeration_info",
            h,
            lambda g: {
                "drm_render": 128,
                "drm_card": 0,
                "hsa_id": 2,
                "hip_id": handles.index(h),
                "hip_uuid": "GPU-" + g.asic_serial.lower().removeprefix("0x"),
            },
        )
    return module
