"""The caching allocator's own figures, per device, from torch (CUDA and ROCm builds alike).

torch.cuda.memory_allocated is what live tensors occupy; memory_reserved adds what the allocator
caches; max_memory_allocated/max_memory_reserved are their peaks since the last reset, which catch
spikes between samples. Device-wide memory (total - free from mem_get_info) is read only when no
vendor library works, and only for devices this process already uses, so that sampling never creates
a GPU context.
"""

import importlib

from ftcompare.telemetry.devices import TorchDevice, pci_bus_id_from_parts
from ftcompare.telemetry.reading import BackendUnavailable, describe_error
from ftcompare.telemetry.schema import MIB

NAME = "torch"
COLUMNS = ("torch_allocated_mb", "torch_reserved_mb")
DEVICE_WIDE_COLUMNS = ("vram_used_mb", "vram_total_mb")


class TorchBackend:
    name = NAME

    def __init__(self, torch_module):
        self.torch = torch_module
        self.cuda = torch_module.cuda
        hip = getattr(torch_module.version, "hip", None)
        self.runtime = f"ROCm/HIP {hip}" if hip else f"CUDA {getattr(torch_module.version, 'cuda', None)}"
        self.is_rocm = bool(hip)

    @classmethod
    def open(cls):
        try:
            torch = importlib.import_module("torch")
        except Exception as error:
            raise BackendUnavailable(f"import torch failed: {describe_error(error)}") from None
        try:
            available = torch.cuda.is_available()
        except Exception as error:
            raise BackendUnavailable(f"torch.cuda.is_available() failed: {describe_error(error)}") from None
        if not available:
            build = (
                "a CPU-only build"
                if not (torch.version.cuda or getattr(torch.version, "hip", None))
                else "no GPU visible to it"
            )
            raise BackendUnavailable(f"torch.cuda.is_available() is False (torch {torch.__version__}, {build})")
        backend = cls(torch)
        if backend.device_count() == 0:
            raise BackendUnavailable("torch sees no GPU")
        return backend

    def close(self) -> None:
        """Nothing to release: the allocator belongs to the job."""

    def device_count(self) -> int:
        return int(self.cuda.device_count())

    def list_devices(self) -> list[TorchDevice]:
        devices = []
        for ordinal in range(self.device_count()):
            props = self.cuda.get_device_properties(ordinal)
            parts = [getattr(props, key, None) for key in ("pci_domain_id", "pci_bus_id", "pci_device_id")]
            pci = pci_bus_id_from_parts(*parts) if all(isinstance(p, int) for p in parts) else None
            uuid = getattr(props, "uuid", None)
            devices.append(
                TorchDevice(
                    ordinal=ordinal,
                    name=getattr(props, "name", None),
                    pci_bus_id=pci,
                    uuid=str(uuid) if uuid is not None else None,
                )
            )
        return devices

    def reset_peaks(self) -> None:
        for ordinal in range(self.device_count()):
            self.cuda.reset_peak_memory_stats(ordinal)

    def sources(self, ordinal: int) -> dict:
        return {
            "torch_allocated_mb": f"torch memory_allocated (cuda:{ordinal})",
            "torch_reserved_mb": f"torch memory_reserved (cuda:{ordinal})",
            "vram_used_mb": f"torch.cuda.mem_get_info total - free, device-wide (cuda:{ordinal})",
            "vram_total_mb": f"torch.cuda.mem_get_info total (cuda:{ordinal})",
        }

    def read(self, ordinal: int, label: str, read_log, device_wide: bool) -> dict:
        values = {}
        try:
            values["torch_allocated_mb"] = self.cuda.memory_allocated(ordinal) / MIB
            values["torch_reserved_mb"] = self.cuda.memory_reserved(ordinal) / MIB
        except Exception as error:
            for column in COLUMNS:
                read_log.failed(label, column, error, NAME)
                values[column] = None
        if device_wide:
            values.update(self._device_wide(ordinal, label, read_log, values.get("torch_reserved_mb")))
        return values

    def _device_wide(self, ordinal, label, read_log, reserved_mb):
        if not reserved_mb:
            for column in DEVICE_WIDE_COLUMNS:
                read_log.missing(
                    label,
                    column,
                    "torch: mem_get_info is read only once this process holds memory "
                    "on the device (so sampling creates no GPU context)",
                )
            return {column: None for column in DEVICE_WIDE_COLUMNS}
        try:
            free, total = self.cuda.mem_get_info(ordinal)
        except Exception as error:
            for column in DEVICE_WIDE_COLUMNS:
                read_log.failed(label, column, error, NAME)
            return {column: None for column in DEVICE_WIDE_COLUMNS}
        return {"vram_used_mb": (total - free) / MIB, "vram_total_mb": total / MIB}

    def peaks(self, ordinal: int) -> dict:
        """max_memory_allocated and max_memory_reserved in MiB, since the last reset."""
        return {
            "torch_max_allocated_mb": self.cuda.max_memory_allocated(ordinal) / MIB,
            "torch_max_reserved_mb": self.cuda.max_memory_reserved(ordinal) / MIB,
        }
