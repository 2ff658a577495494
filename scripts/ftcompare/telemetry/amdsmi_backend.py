"""AMD GPUs through amdsmi (ROCm 5.7 to 7.x): device-wide VRAM, activity, power, temperature,
energy counter and this process's VRAM.

Return shapes differ by version and chip, so every read takes what is there:
- power: `average_socket_power` (MI200 and earlier, 5.7 on), `current_socket_power` (MI300, 6.x on),
  `socket_power` (7.x); unsupported ones are "N/A".
- energy: `amdsmi_get_energy_count` gives the accumulator as `power` (5.7, early 6.x) or
  `energy_accumulator` (later), times `counter_resolution` in µJ.
- process VRAM: `amdsmi_get_gpu_process_list` returns dicts in later versions; 5.7 and early 6.x
  return handles to pass to `amdsmi_get_gpu_process_info`. Either way the entry has `pid`, `mem` and
  `memory_usage.vram_mem` in bytes.
- temperature: already °C, whatever older headers say about millidegrees.
"""

import contextlib
import importlib
import io
import logging
import os
import sys

from ftcompare.telemetry.devices import VendorDevice, amd_unique_id, normalise_pci_bus_id
from ftcompare.telemetry.reading import BackendUnavailable, DeviceReading, describe_error, number
from ftcompare.telemetry.schema import MIB

NAME = "amdsmi"
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
POWER_KEYS = ("socket_power", "current_socket_power", "average_socket_power")
TEMPERATURE_SENSORS = ("HOTSPOT", "JUNCTION", "EDGE")
ENERGY_COUNTER = "amdsmi energy counter (accumulator × counter_resolution)"
# Above this a "power" reading is a unit or sentinel problem, not a GPU.
IMPLAUSIBLE_POWER_W = 10_000


@contextlib.contextmanager
def _stdout_to_stderr(captured: io.StringIO):
    """amdsmi prints to stdout when its native library is missing; stdout must stay clean."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:
        saved = None
    if saved is not None:
        os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(captured):
            yield
    finally:
        if saved is not None:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def import_amdsmi():
    captured = io.StringIO()
    try:
        with _stdout_to_stderr(captured):
            return importlib.import_module("amdsmi")
    except ModuleNotFoundError as error:
        raise BackendUnavailable(f"the amdsmi package is not installed ({error})") from None
    except Exception as error:  # KeyError, OSError, AttributeError: a package without its native library
        printed = " ".join(captured.getvalue().split())
        raise BackendUnavailable(
            f"import amdsmi failed: {describe_error(error)}" + (f" (it printed: {printed})" if printed else "")
        ) from None


class AmdsmiBackend:
    name = NAME
    columns = COLUMNS
    energy_counter = ENERGY_COUNTER

    def __init__(self, module):
        self.smi = module
        self.library_version = _library_version(module)
        self._temperature_sensor = {}
        self._power_key = {}

    @classmethod
    def open(cls):
        module = import_amdsmi()
        try:
            module.amdsmi_init()
        except Exception as error:
            raise BackendUnavailable(f"amdsmi_init failed: {describe_error(error)}") from None
        backend = cls(module)
        try:
            handles = module.amdsmi_get_processor_handles()
        except Exception as error:
            backend.close()
            raise BackendUnavailable(f"amdsmi_get_processor_handles failed: {describe_error(error)}") from None
        if not handles:
            backend.close()
            raise BackendUnavailable("amdsmi found no AMD GPU")
        backend._handles = list(handles)
        return backend

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.smi.amdsmi_shut_down()

    def list_devices(self) -> list[VendorDevice]:
        return [
            VendorDevice(
                index=i,
                name=self._name(h),
                pci_bus_id=self._bdf(h),
                uuid=self._call_text("amdsmi_get_gpu_device_uuid", h),
                unique_id=self._unique_id(h),
                handle=h,
            )
            for i, h in enumerate(self._handles)
        ]

    def driver_version(self, device: VendorDevice) -> str | None:
        info = self._call("amdsmi_get_gpu_driver_info", device.handle)
        if isinstance(info, dict) and info.get("driver_version") not in (None, "", "N/A"):
            return str(info["driver_version"])
        return self._call_text("amdsmi_get_gpu_driver_version", device.handle)

    def notes(self, device: VendorDevice) -> list[str]:
        if device.name and "MI250" in device.name.upper():
            return [
                "one GCD of an MI250/MI250X: the card shows as two devices, each with its own half of "
                "the memory and its own figures; power and energy are the package's and some drivers "
                "report them on one GCD only, so do not add the two GCDs' power or energy"
            ]
        return []

    def sources(self, device: VendorDevice) -> dict:
        sensor = self._temperature_sensor.get(device.index)
        return {
            "vram_used_mb": "amdsmi device-wide VRAM used (amdsmi_get_gpu_vram_usage vram_used)",
            "vram_total_mb": "amdsmi VRAM total (amdsmi_get_gpu_vram_usage vram_total)",
            "process_vram_mb": f"amdsmi process list, VRAM of this process (pid {os.getpid()})",
            "util_pct": "amdsmi gfx_activity",
            "mem_util_pct": "amdsmi umc_activity",
            "power_w": f"amdsmi_get_power_info {self._power_key.get(device.index, '/'.join(POWER_KEYS))}",
            "temp_c": f"amdsmi_get_temp_metric {sensor.lower() if sensor else '(no sensor answered)'}, current",
        }

    def read(self, device: VendorDevice, label: str, read_log) -> dict:
        """One sample of `device`; `energy_counter_j` is the raw counter, for energy accounting."""
        h, values = device.handle, {}
        reading = DeviceReading(read_log, label, NAME)
        attempt = reading.attempt

        vram = attempt(("vram_used_mb", "vram_total_mb"), lambda: self.smi.amdsmi_get_gpu_vram_usage(h)) or {}
        values["vram_used_mb"] = number(vram.get("vram_used"))
        values["vram_total_mb"] = number(vram.get("vram_total"))
        activity = attempt(("util_pct", "mem_util_pct"), lambda: self.smi.amdsmi_get_gpu_activity(h)) or {}
        values["util_pct"] = number(activity.get("gfx_activity"))
        values["mem_util_pct"] = number(activity.get("umc_activity"))
        power_info = attempt(("power_w",), lambda: self.smi.amdsmi_get_power_info(h))
        values["power_w"] = self._power(device, power_info, label, read_log) if power_info is not None else None
        values["temp_c"] = attempt(("temp_c",), lambda: self._temperature(device))
        values["energy_counter_j"] = attempt(("energy_j",), lambda: self._energy_counter_j(h))
        values["process_vram_mb"] = attempt(("process_vram_mb",), lambda: self._process_vram_mb(h))
        reasons = {
            "energy_counter_j": ("energy_j", "amdsmi_get_energy_count gave no accumulator or resolution"),
            "process_vram_mb": (
                "process_vram_mb",
                f"this process (pid {os.getpid()}) is not in amdsmi's "
                "process list (no GPU context yet, or a container hides host PIDs)",
            ),
        }
        reading.record_missing(values, reasons, "amdsmi reported no value (N/A or key absent)")
        return values

    def _power(self, device, info, label, read_log):
        readings = {key: number(info.get(key)) for key in POWER_KEYS if isinstance(info, dict)}
        # On an MI250 the GCD that does not carry the package's power reads 0 W: a real reading.
        for key in [k for k, v in readings.items() if v and v > 0] + [k for k, v in readings.items() if v == 0]:
            value = readings[key]
            if value >= IMPLAUSIBLE_POWER_W:
                read_log.missing(
                    label, "power_w", f"amdsmi {key}={value:g} is not a plausible power in W", level=logging.WARNING
                )
                continue
            self._power_key[device.index] = key
            return value
        return None

    def _temperature(self, device):
        sensor_types = getattr(self.smi, "AmdSmiTemperatureType", None)
        metric = getattr(getattr(self.smi, "AmdSmiTemperatureMetric", None), "CURRENT", None)
        known = self._temperature_sensor.get(device.index)
        candidates = [known] if known else [s for s in TEMPERATURE_SENSORS if hasattr(sensor_types, s)]
        error = None
        for sensor in candidates:
            try:
                value = number(self.smi.amdsmi_get_temp_metric(device.handle, getattr(sensor_types, sensor), metric))
            except Exception as caught:  # this sensor is not supported on this chip: try the next
                error = caught
                continue
            if value is not None:
                self._temperature_sensor[device.index] = sensor
                return value
        if error is not None:
            raise error
        return None

    def _energy_counter_j(self, handle):
        counts = self.smi.amdsmi_get_energy_count(handle)
        accumulator = number(counts.get("energy_accumulator", counts.get("power")))
        resolution_uj = number(counts.get("counter_resolution"))
        if accumulator is None or resolution_uj is None:
            return None
        return accumulator * resolution_uj / 1e6

    def _process_vram_mb(self, handle):
        pid = os.getpid()
        for entry in self.smi.amdsmi_get_gpu_process_list(handle):
            info = entry if isinstance(entry, dict) else self.smi.amdsmi_get_gpu_process_info(handle, entry)
            if number(info.get("pid")) != pid:
                continue
            usage = info.get("memory_usage") if isinstance(info.get("memory_usage"), dict) else {}
            vram = number(usage.get("vram_mem"))
            vram = vram if vram is not None else number(info.get("mem"))
            return vram / MIB if vram is not None else None
        return None

    def _name(self, handle):
        asic = self._call("amdsmi_get_gpu_asic_info", handle)
        name = asic.get("market_name") if isinstance(asic, dict) else None
        if not name or name == "N/A":
            board = self._call("amdsmi_get_gpu_board_info", handle)
            name = board.get("product_name") if isinstance(board, dict) else None
        return str(name) if name and name != "N/A" else None

    def _bdf(self, handle):
        return normalise_pci_bus_id(self._call_text("amdsmi_get_gpu_device_bdf", handle))

    def _unique_id(self, handle):
        enumeration = self._call("amdsmi_get_gpu_enumeration_info", handle)
        if isinstance(enumeration, dict) and amd_unique_id(enumeration.get("hip_uuid")):
            return amd_unique_id(enumeration.get("hip_uuid"))
        asic = self._call("amdsmi_get_gpu_asic_info", handle)
        return amd_unique_id(asic.get("asic_serial")) if isinstance(asic, dict) else None

    def _call(self, function_name, *args):
        """A static-information call that may not exist in this version; None when it fails."""
        function = getattr(self.smi, function_name, None)
        if function is None:
            return None
        try:
            return function(*args)
        except Exception:
            return None

    def _call_text(self, function_name, *args):
        value = self._call(function_name, *args)
        return str(value) if value not in (None, "", "N/A") else None


def _library_version(module) -> str | None:
    try:
        version = module.amdsmi_get_lib_version()
    except Exception:
        return getattr(module, "__version__", None)
    if isinstance(version, dict):
        parts = [str(version[k]) for k in ("year", "major", "minor", "release") if k in version]
        return ".".join(parts) or None
    return str(version)
