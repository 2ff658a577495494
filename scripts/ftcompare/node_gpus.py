"""Which GPUs this node offers the workflow's jobs, named as a job's visibility variable takes them.

In this order:
1. FTCOMPARE_GPUS=0,1,2,3 (indices, GPU-/MIG- UUIDs): exactly these; empty for none.
2. A visibility variable set before the workflow started: HIP_VISIBLE_DEVICES (when not empty), else
   CUDA_VISIBLE_DEVICES, else ROCR_VISIBLE_DEVICES, read as the runtimes read them (HIP takes an empty
   HIP_VISIBLE_DEVICES as unset; a negative index ends the list, so -1 hides every device). Under SLURM
   this is the scheduler's assignment.
3. Counted: NVML (nvidia-ml-py), else `nvidia-smi`, else amdsmi: indices 0..N-1, in PCI bus order on
   NVIDIA (CUDA numbers the same way once a job sets CUDA_DEVICE_ORDER=PCI_BUS_ID).
Nothing found is an empty list, as on a CPU-only machine. Nothing here touches torch: a job must choose
its devices before anything initialises CUDA or HIP.
"""

import contextlib
import importlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

POOL_VARIABLE = "FTCOMPARE_GPUS"
CUDA = "CUDA_VISIBLE_DEVICES"
HIP = "HIP_VISIBLE_DEVICES"
ROCR = "ROCR_VISIBLE_DEVICES"
# Present on a machine with the ROCm kernel driver: FTCOMPARE_GPUS then names HIP devices.
KFD = Path("/dev/kfd")


@dataclass(frozen=True)
class NodeGpus:
    devices: tuple[str, ...]
    variable: str  # the variable a job sets to its share of `devices`
    source: str  # where the list came from, for the log
    from_environment: bool = False  # a visibility variable set before the workflow (SLURM's, under SLURM)
    detected: str | None = None  # "nvidia" or "amd" when counted by a vendor tool


def node_gpus(environ, kfd: Path = KFD) -> NodeGpus:
    if environ.get(POOL_VARIABLE) is not None:
        variable = HIP if kfd.exists() else CUDA
        value = environ[POOL_VARIABLE]
        return NodeGpus(_entries(value), variable, f"{POOL_VARIABLE}={value!r}")
    for variable in (HIP, CUDA, ROCR):
        value = environ.get(variable)
        if value is None or (variable == HIP and value == ""):
            continue
        return NodeGpus(_entries(value), variable, f"{variable}={value!r} set before the job", from_environment=True)
    reasons = []
    for vendor, probe in PROBES:
        count, how = probe()
        if count:
            return NodeGpus(tuple(str(i) for i in range(count)), HIP if vendor == "amd" else CUDA, how, detected=vendor)
        reasons.append(how)
    return NodeGpus((), CUDA, "no GPU found (" + "; ".join(reasons) + ")")


def _entries(value: str) -> tuple[str, ...]:
    entries = []
    for entry in (e.strip() for e in str(value).split(",")):
        if not entry or re.fullmatch(r"-\d+", entry):
            break
        entries.append(entry)
    return tuple(entries)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".rstrip(": ")


def _count_nvml() -> tuple[int | None, str]:
    try:
        nvml = importlib.import_module("pynvml")
    except Exception as error:
        return None, f"NVML: import pynvml failed ({_describe(error)})"
    try:
        nvml.nvmlInit()
    except Exception as error:
        return None, f"NVML: nvmlInit failed ({_describe(error)})"
    try:
        count = int(nvml.nvmlDeviceGetCount())
    except Exception as error:
        return None, f"NVML: nvmlDeviceGetCount failed ({_describe(error)})"
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()
    return count, f"{count} GPU(s) counted by NVML"


def _count_nvidia_smi() -> tuple[int | None, str]:
    command = shutil.which("nvidia-smi")
    if command is None:
        return None, "nvidia-smi: not on PATH"
    try:
        result = subprocess.run(
            [command, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError) as error:
        return None, f"nvidia-smi: {_describe(error)}"
    if result.returncode != 0:
        return None, f"nvidia-smi: exit status {result.returncode} ({result.stderr.strip()[:200]})"
    count = sum(1 for line in result.stdout.splitlines() if line.strip())
    return count, f"{count} GPU(s) listed by nvidia-smi"


def _count_amdsmi() -> tuple[int | None, str]:
    from ftcompare.telemetry.amdsmi_backend import import_amdsmi
    from ftcompare.telemetry.reading import BackendUnavailable

    try:
        smi = import_amdsmi()
    except BackendUnavailable as error:
        return None, f"amdsmi: {error}"
    try:
        smi.amdsmi_init()
    except Exception as error:
        return None, f"amdsmi: amdsmi_init failed ({_describe(error)})"
    try:
        count = len(smi.amdsmi_get_processor_handles())
    except Exception as error:
        return None, f"amdsmi: amdsmi_get_processor_handles failed ({_describe(error)})"
    finally:
        with contextlib.suppress(Exception):
            smi.amdsmi_shut_down()
    return count, f"{count} GPU(s) counted by amdsmi"


PROBES = (("nvidia", _count_nvml), ("nvidia", _count_nvidia_smi), ("amd", _count_amdsmi))
