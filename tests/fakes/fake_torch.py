"""A fake `torch` with the torch.cuda memory API of a CUDA or ROCm build, for machines without a GPU.

Values are in bytes, as torch reports them; `peak_*` are what max_memory_* return until
reset_peak_memory_stats() resets them to the current figures.
"""

import types
from dataclasses import dataclass, field


@dataclass
class FakeTorchGpu:
    name: str = "NVIDIA H200"
    pci: tuple = (0, 0x17, 0)  # domain, bus, device; None for a torch without PCI properties
    uuid: str | None = "8e3c5a1b-2f4d-6e7a-9b0c-1d2e3f4a5b6c"
    allocated: int = 0
    reserved: int = 0
    peak_allocated: int = 0
    peak_reserved: int = 0
    total: int = 150_754_820_096
    free: int = 140_000_000_000
    resets: list = field(default_factory=list)


def make_torch(gpus: list, hip: str | None = None) -> types.ModuleType:
    module = types.ModuleType("torch")
    module.__version__ = "2.13.0+fake"
    module.version = types.SimpleNamespace(cuda=None if hip else "12.8", hip=hip)

    def properties(i):
        gpu = gpus[i]
        pci = {} if gpu.pci is None else dict(zip(("pci_domain_id", "pci_bus_id", "pci_device_id"), gpu.pci))
        return types.SimpleNamespace(name=gpu.name, total_memory=gpu.total, uuid=gpu.uuid, **pci)

    def reset(i):
        gpu = gpus[i]
        gpu.resets.append((gpu.allocated, gpu.reserved))
        gpu.peak_allocated, gpu.peak_reserved = gpu.allocated, gpu.reserved

    module.cuda = types.SimpleNamespace(
        is_available=lambda: bool(gpus),
        device_count=lambda: len(gpus),
        get_device_properties=properties,
        memory_allocated=lambda i: gpus[i].allocated,
        memory_reserved=lambda i: gpus[i].reserved,
        max_memory_allocated=lambda i: gpus[i].peak_allocated,
        max_memory_reserved=lambda i: gpus[i].peak_reserved,
        reset_peak_memory_stats=reset,
        mem_get_info=lambda i: (gpus[i].free, gpus[i].total),
    )
    return module
