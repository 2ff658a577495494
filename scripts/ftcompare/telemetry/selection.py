"""Which backends run for `telemetry.backend`, on which devices, and why the others do not.

auto       amdsmi or NVML for device figures (whichever works and matches torch's devices), plus torch
           and cpu
amdsmi/nvml  that vendor library, plus torch and cpu; if it cannot run, a warning and torch + cpu
torch      torch's allocator figures (and device-wide memory from mem_get_info), plus cpu
cpu        process RSS and CPU % only
none       no sampling; telemetry.csv has its header only
"""

import logging
from dataclasses import dataclass, field

from ftcompare.errors import FtcompareError
from ftcompare.telemetry import amdsmi_backend, cpu_backend, devices, nvml_backend, torch_backend
from ftcompare.telemetry.reading import BackendUnavailable, describe_error

log = logging.getLogger("ftcompare.telemetry")

CHOICES = ("auto", "amdsmi", "nvml", "torch", "cpu", "none")
VENDORS = {"amdsmi": amdsmi_backend.AmdsmiBackend, "nvml": nvml_backend.NvmlBackend}


@dataclass
class DeviceSlot:
    """One `device` value of telemetry.csv and what fills its rows."""

    label: str  # cuda:N or cpu
    kind: str  # gpu or process
    name: str | None
    vendor_device: devices.VendorDevice | None = None
    torch_ordinal: int | None = None
    notes: list = field(default_factory=list)
    backends: tuple = ()
    driver_version: str | None = None  # read at start: a hung library must not be called again at the end


@dataclass
class ActiveBackends:
    requested: str
    vendor: object = None
    torch: object = None
    cpu: object = None
    slots: list = field(default_factory=list)
    reasons: dict = field(default_factory=dict)
    mapping: str | None = None

    @property
    def primary(self) -> str:
        """The backend the device figures come from, as telemetry.json's `backend` names it."""
        for backend in (self.vendor, self.torch, self.cpu):
            if backend is not None:
                return backend.name
        return "none"

    def close(self) -> None:
        for backend in (self.vendor, self.torch, self.cpu):
            if backend is not None:
                try:
                    backend.close()
                except Exception as error:
                    log.warning("telemetry: closing %s failed: %s", backend.name, describe_error(error))


def open_backends(requested: str, environ, kfd_root=devices.KFD_NODES) -> ActiveBackends:
    if requested not in CHOICES:
        raise FtcompareError(f"telemetry.backend = {requested!r}: allowed are {', '.join(CHOICES)}")
    active = ActiveBackends(requested)
    if requested == "none":
        active.reasons = {name: "not used: telemetry.backend is none" for name in ("amdsmi", "nvml", "torch", "cpu")}
        return active
    torch_devices = None
    if requested in ("auto", "amdsmi", "nvml", "torch"):
        try:
            torch = torch_backend.TorchBackend.open()
            torch_devices = torch.list_devices()
            active.torch = torch
        except BackendUnavailable as error:
            active.reasons["torch"] = f"not used: {error}"
        except Exception as error:
            active.reasons["torch"] = f"not used: {describe_error(error)}"
    else:
        active.reasons["torch"] = f"not used: telemetry.backend is {requested}"

    vendors = _vendor_order(requested, active.torch)
    for name in VENDORS:
        if name not in vendors:
            active.reasons[name] = f"not used: telemetry.backend is {requested}"
    candidates = []
    for name in vendors:
        result = _try_vendor(name, environ, torch_devices, kfd_root)
        if isinstance(result, str):
            active.reasons[name] = f"not used: {result}"
        else:
            candidates.append((name, result))
    if candidates:
        (name, (backend, selection)), others = candidates[0], candidates[1:]
        active.vendor, active.mapping = backend, selection.how
        active.reasons[name] = f"chosen: {len(selection.devices)} visible device(s); {selection.how}"
        for warning in selection.warnings:
            log.warning("telemetry: %s: %s", name, warning)
        for other, (other_backend, other_selection) in others:
            other_backend.close()
            why = f"torch is a {active.torch.runtime} build" if active.torch else "first in order"
            active.reasons[other] = f"works ({len(other_selection.devices)} device(s)) but {name} was preferred ({why})"
        active.slots = _gpu_slots(backend, selection, torch_devices, active.torch)
    elif active.torch is not None:
        active.mapping = "torch's own device numbering"
        active.slots = [
            DeviceSlot(f"cuda:{d.ordinal}", "gpu", d.name, torch_ordinal=d.ordinal, backends=("torch",))
            for d in torch_devices
        ]
    if active.torch is not None:
        labels = ", ".join(slot.label for slot in active.slots if slot.torch_ordinal is not None)
        active.reasons["torch"] = f"used: allocator figures for {labels} ({active.torch.runtime} build)"

    try:
        active.cpu = cpu_backend.CpuBackend.open()
        active.slots.append(DeviceSlot("cpu", "process", active.cpu.describe(), backends=("cpu",)))
        active.reasons["cpu"] = f"used: RSS and CPU % of {active.cpu.describe()}"
    except BackendUnavailable as error:
        active.reasons["cpu"] = f"not used: {error}"

    if requested in VENDORS and active.vendor is None:
        log.warning(
            "telemetry: telemetry.backend is %s but %s; falling back to %s",
            requested,
            active.reasons[requested].removeprefix("not used: "),
            active.primary,
        )
    return active


def _vendor_order(requested, torch):
    if requested in VENDORS:
        return [requested]
    if requested != "auto":
        return []
    if torch is not None and not torch.is_rocm:
        return ["nvml", "amdsmi"]
    return ["amdsmi", "nvml"]


def _try_vendor(name, environ, torch_devices, kfd_root):
    """(backend, selection) when the vendor library works and this job sees its devices, else why not."""
    try:
        backend = VENDORS[name].open()
    except BackendUnavailable as error:
        return str(error)
    except Exception as error:
        return describe_error(error)
    try:
        vendor_devices = backend.list_devices()
        kfd_nodes = devices.read_kfd_nodes(kfd_root) if name == "amdsmi" and not torch_devices else None
        selection = devices.select_visible(name, vendor_devices, environ, torch_devices, kfd_nodes)
    except Exception as error:
        backend.close()
        return f"device mapping failed: {describe_error(error)}"
    if not selection.devices:
        backend.close()
        return f"this job sees none of its {len(vendor_devices)} device(s) ({selection.how})"
    return backend, selection


def _gpu_slots(backend, selection, torch_devices, torch):
    by_ordinal = {d.ordinal: d for d in torch_devices or []}
    slots = []
    for ordinal, device in selection.devices:
        has_torch = torch is not None and ordinal in by_ordinal
        slots.append(
            DeviceSlot(
                f"cuda:{ordinal}",
                "gpu",
                device.name,
                vendor_device=device,
                torch_ordinal=ordinal if has_torch else None,
                notes=backend.notes(device),
                backends=(backend.name, "torch") if has_torch else (backend.name,),
                driver_version=backend.driver_version(device),
            )
        )
    if torch_devices:
        seen = {ordinal for ordinal, _ in selection.devices}
        slots += [
            DeviceSlot(
                f"cuda:{d.ordinal}",
                "gpu",
                d.name,
                torch_ordinal=d.ordinal,
                backends=("torch",),
                notes=[f"not matched to a {backend.name} device: torch figures only"],
            )
            for d in torch_devices
            if d.ordinal not in seen
        ]
        slots.sort(key=lambda slot: int(slot.label.split(":")[1]))
    return slots


def log_choice(active: ActiveBackends, job: str) -> None:
    used = [b.name for b in (active.vendor, active.torch, active.cpu) if b is not None]
    log.info(
        "telemetry for %s: backend=%s -> %s%s",
        job or "this job",
        active.requested,
        active.primary,
        f" (with {', '.join(used[1:])})" if len(used) > 1 else "",
    )
    for name in ("amdsmi", "nvml", "torch", "cpu"):
        if name in active.reasons:
            log.info("telemetry   %s: %s", name, active.reasons[name])
    for slot in active.slots:
        if slot.kind == "gpu":
            where = slot.vendor_device.pci_bus_id if slot.vendor_device else None
            log.info(
                "telemetry   %s = %s%s%s",
                slot.label,
                slot.name or "unnamed device",
                f" at PCI {where}" if where else "",
                "".join(f"; {note}" for note in slot.notes),
            )
