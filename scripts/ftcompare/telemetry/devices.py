"""Which of the vendor library's devices this job can see, and which torch ordinal (cuda:N) each is.

amdsmi and NVML enumerate every device on the node in their own order; the job sees the subset its
visibility variables leave, in the runtime's order. Devices are matched by PCI bus id or UUID, not
by position: position is used only where nothing better exists, and then a warning says so.

- torch's own view (the runtime, after every variable is applied) is used when torch sees GPUs.
- Otherwise, NVIDIA: CUDA_VISIBLE_DEVICES (indices or GPU- UUID prefixes).
- Otherwise, AMD: ROCR_VISIBLE_DEVICES (indices or GPU-<unique id>) filters the KFD topology, then
  HIP_VISIBLE_DEVICES (or CUDA_VISIBLE_DEVICES when HIP's is unset or empty) picks from what is left.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

KFD_NODES = Path("/sys/class/kfd/kfd/topology/nodes")


@dataclass(frozen=True)
class VendorDevice:
    index: int  # position in the vendor library's enumeration
    name: str | None
    pci_bus_id: str | None  # normalised "dddd:bb:dd.f"
    uuid: str | None  # as the vendor library reports it
    unique_id: str | None = None  # AMD only: 16 hex digits, what HIP and ROCr call GPU-<unique id>
    handle: object = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class TorchDevice:
    ordinal: int
    name: str | None
    pci_bus_id: str | None
    uuid: str | None


@dataclass(frozen=True)
class KfdNode:
    pci_bus_id: str | None
    unique_id: str | None


@dataclass
class Selection:
    devices: list  # [(ordinal, VendorDevice)], ordinal N is the job's cuda:N
    how: str
    warnings: list = field(default_factory=list)


def normalise_pci_bus_id(text) -> str | None:
    """'00000000:17:00.0', '0000:17:00.0' or '17:00.0' -> '0000:17:00.0'; None if unparsable."""
    if not text:
        return None
    match = re.fullmatch(
        r"(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})(?:\.([0-7]))?", str(text).strip()
    )
    if not match:
        return None
    domain, bus, device, function = match.groups()
    return pci_bus_id_from_parts(int(domain or "0", 16), int(bus, 16), int(device, 16), int(function or "0"))


def pci_bus_id_from_parts(domain: int, bus: int, device: int, function: int = 0) -> str:
    return f"{domain:04x}:{bus:02x}:{device:02x}.{function}"


def pci_slot(pci_bus_id: str | None) -> str | None:
    """Domain, bus and device without the function: torch reports no function number."""
    return pci_bus_id.rsplit(".", 1)[0] if pci_bus_id else None


def normalise_uuid(text) -> str | None:
    """Lower-case hex digits only: 'GPU-8e3c5a1b-...' and '8e3c5a1b...' compare equal."""
    if not text:
        return None
    digits = re.sub(r"[^0-9a-f]", "", str(text).lower().removeprefix("gpu-"))
    return digits or None


def amd_unique_id(value) -> str | None:
    """An AMD GPU's unique id as 16 lower-case hex digits, from 'GPU-…', '0x…' or an integer."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return f"{value:016x}" if value > 0 else None
    text = str(value).strip().lower().removeprefix("gpu-").removeprefix("0x")
    if not re.fullmatch(r"[0-9a-f]{1,16}", text) or int(text, 16) == 0:
        return None
    return text.zfill(16)


def unique_id_from_hip_uuid(uuid_text) -> str | None:
    """On ROCm, torch's device uuid holds the 16 ASCII characters of the unique id, printed as hex."""
    digits = normalise_uuid(uuid_text)
    if not digits or len(digits) != 32:
        return None
    try:
        chars = bytes.fromhex(digits).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return None
    return amd_unique_id(chars) if re.fullmatch(r"[0-9a-fA-F]{16}", chars) else None


def parse_visible(value) -> list[str] | None:
    """The entries of a *_VISIBLE_DEVICES value; None when the variable is unset."""
    if value is None:
        return None
    return [entry.strip() for entry in str(value).split(",")] if str(value).strip() else []


def read_kfd_nodes(root=KFD_NODES) -> list[KfdNode] | None:
    """GPU nodes of the KFD topology in ROCr's enumeration order; None when it cannot be read."""
    root = Path(root)
    try:
        nodes = sorted((p for p in root.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        result = []
        for node in nodes:
            if int((node / "gpu_id").read_text().strip() or "0") == 0:
                continue  # a CPU node
            props = dict(
                line.split(None, 1)
                for line in (node / "properties").read_text().splitlines()
                if len(line.split(None, 1)) == 2
            )
            location = int(props.get("location_id", "0"))
            pci = (
                pci_bus_id_from_parts(
                    int(props.get("domain", "0")), location >> 8, (location >> 3) & 0x1F, location & 0x7
                )
                if location
                else None
            )
            result.append(KfdNode(pci_bus_id=pci, unique_id=amd_unique_id(int(props.get("unique_id", "0")))))
        return result
    except (OSError, ValueError):
        return None


def select_visible(vendor: str, vendor_devices: list, environ, torch_devices=None, kfd_nodes=None) -> Selection:
    """The vendor devices this job sees, each with its ordinal; `vendor` is 'amdsmi' or 'nvml'."""
    if torch_devices:
        return _select_by_torch(vendor, vendor_devices, torch_devices)
    if vendor == "nvml":
        return _select_by_cuda_env(vendor_devices, environ)
    return _select_by_rocm_env(vendor_devices, environ, kfd_nodes)


def _select_by_torch(vendor, vendor_devices, torch_devices) -> Selection:
    chosen, unmatched, keys = [], [], set()
    for torch_device in torch_devices:
        match, key = _match_torch_device(vendor, vendor_devices, torch_device)
        if match is None:
            unmatched.append(f"cuda:{torch_device.ordinal}")
        else:
            chosen.append((torch_device.ordinal, match))
            keys.add(key)
    how = (
        f"torch's devices matched to {vendor} by {' and '.join(sorted(keys))}"
        if chosen
        else f"none of torch's {len(torch_devices)} device(s) is a {vendor} device"
    )
    warnings = (
        [
            f"{', '.join(unmatched)} not found among {vendor}'s devices: no vendor figures for "
            f"{'it' if len(unmatched) == 1 else 'them'}"
        ]
        if chosen and unmatched
        else []
    )
    shared = {}
    for ordinal, device in chosen:
        shared.setdefault(device.index, []).append(f"cuda:{ordinal}")
    warnings += [
        f"{' and '.join(labels)} are the same {vendor} device (a partitioned GPU?): its device-wide "
        "figures are the whole device's"
        for labels in shared.values()
        if len(labels) > 1
    ]
    return Selection(chosen, how, warnings)


def _match_torch_device(vendor, vendor_devices, torch_device):
    slot = pci_slot(torch_device.pci_bus_id)
    if slot:
        for device in vendor_devices:
            if pci_slot(device.pci_bus_id) == slot:
                return device, "PCI bus id"
    if vendor == "amdsmi":
        unique = unique_id_from_hip_uuid(torch_device.uuid)
        for device in vendor_devices:
            if unique and device.unique_id == unique:
                return device, "unique id (UUID)"
    else:
        wanted = normalise_uuid(torch_device.uuid)
        for device in vendor_devices:
            if wanted and normalise_uuid(device.uuid) == wanted:
                return device, "UUID"
    return None, None


def _select_by_cuda_env(vendor_devices, environ) -> Selection:
    entries = parse_visible(environ.get("CUDA_VISIBLE_DEVICES"))
    position_note = (
        "assuming CUDA numbers devices in PCI bus order like NVML (set CUDA_DEVICE_ORDER=PCI_BUS_ID to make it so)"
    )
    pci_order = environ.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID"
    if entries is None:
        warnings = [f"ordinals by position, {position_note}"] if len(vendor_devices) > 1 and not pci_order else []
        return Selection(
            list(enumerate(vendor_devices)),
            f"CUDA_VISIBLE_DEVICES unset: all {len(vendor_devices)} NVML device(s)",
            warnings,
        )
    picked, problem, by_index = _resolve_entries(entries, vendor_devices, _nvml_uuid_match)
    warnings = [problem] if problem else []
    if by_index and not pci_order and len(vendor_devices) > 1:
        warnings.append(f"CUDA_VISIBLE_DEVICES indices mapped by position, {position_note}")
    return Selection(
        [(ordinal, vendor_devices[i]) for ordinal, i in enumerate(picked)],
        f"CUDA_VISIBLE_DEVICES={environ.get('CUDA_VISIBLE_DEVICES')!r}",
        warnings,
    )


def _select_by_rocm_env(vendor_devices, environ, kfd_nodes) -> Selection:
    warnings = []
    if kfd_nodes:
        base = list(kfd_nodes)
        order = "KFD topology order"
    else:
        base = [KfdNode(d.pci_bus_id, d.unique_id) for d in sorted(vendor_devices, key=lambda d: d.pci_bus_id or "")]
        order = "PCI bus order"
        warnings.append("KFD topology not readable: assuming ROCm numbers devices in PCI bus order")
    described = []
    rocr = parse_visible(environ.get("ROCR_VISIBLE_DEVICES"))
    if rocr is not None:
        picked, problem, _ = _resolve_entries(rocr, base, _amd_uuid_match)
        base = [base[i] for i in picked]
        warnings += [f"ROCR_VISIBLE_DEVICES: {problem}"] if problem else []
        described.append(f"ROCR_VISIBLE_DEVICES={environ.get('ROCR_VISIBLE_DEVICES')!r}")
    # Like HIP itself: HIP_VISIBLE_DEVICES unless empty, else CUDA_VISIBLE_DEVICES; an empty value is unset.
    hip_name = "HIP_VISIBLE_DEVICES" if environ.get("HIP_VISIBLE_DEVICES") else "CUDA_VISIBLE_DEVICES"
    hip = parse_visible(environ.get(hip_name) or None)
    if hip is not None:
        picked, problem, _ = _resolve_entries(hip, base, _amd_uuid_match)
        base = [base[i] for i in picked]
        warnings += [f"{hip_name}: {problem}"] if problem else []
        described.append(f"{hip_name}={environ.get(hip_name)!r}")
    chosen = []
    for node in base:
        device = _find_amd_device(vendor_devices, node)
        if device is None:
            warnings.append(f"device {node.pci_bus_id or node.unique_id} is visible but not among amdsmi's devices")
        else:
            chosen.append((len(chosen), device))
    how = (", then ".join(described) if described else "no visibility variable set: every device") + f" ({order})"
    return Selection(chosen, how, warnings)


def _find_amd_device(vendor_devices, node):
    for device in vendor_devices:
        if node.pci_bus_id and device.pci_bus_id == node.pci_bus_id:
            return device
    for device in vendor_devices:
        if node.pci_bus_id and pci_slot(device.pci_bus_id) == pci_slot(node.pci_bus_id):
            return device
    for device in vendor_devices:
        if node.unique_id and device.unique_id == node.unique_id:
            return device
    return None


def _resolve_entries(entries, candidates, uuid_match):
    """Indices into `candidates` named by `entries`; like CUDA and HIP, stop at the first bad entry.

    Returns (indices, what stopped the list or None, whether any entry was an index).
    """
    picked, by_index = [], False
    for entry in entries:
        if re.fullmatch(r"-?\d+", entry):
            index = int(entry)
            if index < 0:  # -1 is how a job is shown no device (ftcompare.job_devices): the list ends, as intended
                return picked, None, by_index
            if index >= len(candidates):
                problem = f"entry {entry!r} is not a device index (0..{len(candidates) - 1}); the list stops there"
                return picked, problem, by_index
            by_index = True
        else:
            matches = [i for i, candidate in enumerate(candidates) if uuid_match(entry, candidate)]
            if len(matches) != 1:
                reason = "matches no device" if not matches else "matches several devices"
                return picked, f"entry {entry!r} {reason}; the list stops there", by_index
            index = matches[0]
        if index in picked:
            return picked, f"entry {entry!r} repeats a device; the list stops there", by_index
        picked.append(index)
    return picked, None, by_index


def _nvml_uuid_match(entry, device) -> bool:
    # CUDA accepts any unique prefix of the UUID, with its GPU- prefix.
    return bool(device.uuid) and entry.lower().startswith("gpu-") and device.uuid.lower().startswith(entry.lower())


def _amd_uuid_match(entry, node) -> bool:
    wanted = amd_unique_id(entry) if entry.lower().startswith("gpu-") else None
    return wanted is not None and node.unique_id == wanted
