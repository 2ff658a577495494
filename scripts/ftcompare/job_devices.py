"""What one job gets of the node: its GPUs and its CPU threads.

assign_job_devices(k) runs first in a train or generate job, before anything initialises CUDA or HIP
(they read the visibility variables once, at that moment):
- k = 0 (`device: cpu`): every GPU hidden, so the job and its telemetry leave the GPUs to other jobs;
- under SLURM, a scheduler that gave the job exactly its k GPUs: kept as it is;
- no GPU on the node: nothing changes, the job runs as it would have;
- otherwise k devices from the node's pool (ftcompare.device_pool), held until the job's process ends,
  and written into the visibility variable the node's list came from (ftcompare.node_gpus).
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

from ftcompare.device_pool import DevicePool, Lease, default_lock_dir
from ftcompare.errors import FtcompareError
from ftcompare.node_gpus import CUDA, HIP, KFD, node_gpus

WAIT_VARIABLE = "FTCOMPARE_GPU_WAIT_S"
# Threads per job when Snakemake has no --cores (a cluster executor); a profile's set-threads decides there.
THREADS_WITHOUT_CORES = 8


@dataclass(frozen=True)
class JobDevices:
    devices: tuple[str, ...]  # as the visibility variable names them; () when the job has no GPU
    variable: str | None  # the variable that holds them
    assignment: str  # how the job came by them, one line for the log, metrics.json and telemetry.json
    lease: Lease | None = field(default=None, compare=False, repr=False)

    def record(self) -> dict:
        return {"devices": list(self.devices), "variable": self.variable, "assignment": self.assignment}


def assign_job_devices(
    count: int,
    environ=None,
    *,
    holder: str = "",
    lock_dir: Path | None = None,
    timeout_s: float | None = None,
    poll_s: float = 1.0,
    on_wait=None,
    kfd: Path = KFD,
) -> JobDevices:
    """The job's `count` GPUs, set in `environ` (os.environ by default) for the runtime to read.

    While every device is held by other jobs this waits, up to `timeout_s` or $FTCOMPARE_GPU_WAIT_S
    (unset: as long as it takes); asking for more devices than the node has fails at once.
    """
    environ = os.environ if environ is None else environ
    if count <= 0:
        environ[CUDA] = ""
        environ[HIP] = "-1"  # HIP takes an empty value as unset; an invalid index ends the list
        return JobDevices((), None, "none: the job asks for no GPU, every GPU hidden from it")
    gpus = node_gpus(environ, kfd)
    under_slurm = bool(environ.get("SLURM_JOB_ID"))
    if under_slurm and gpus.from_environment:
        if len(gpus.devices) == count:
            return JobDevices(gpus.devices, gpus.variable, f"as SLURM gave them ({gpus.source})")
        if len(gpus.devices) < count:
            raise FtcompareError(
                f"the job asks for {count} GPU(s) but SLURM gave it {len(gpus.devices)} ({gpus.source}); "
                "ask SLURM for as many through the rule's `gpu` resource"
            )
    slurm_gpus = environ.get("SLURM_STEP_GPUS") or environ.get("SLURM_JOB_GPUS")
    if under_slurm and not gpus.from_environment and slurm_gpus:
        return JobDevices(tuple(slurm_gpus.split(",")), None, f"as SLURM gave them (SLURM_JOB_GPUS={slurm_gpus!r})")
    if not gpus.devices:
        return JobDevices((), None, f"none: {gpus.source}; the job runs as it would without the pool")
    if lock_dir is None:
        lock_dir = default_lock_dir(environ)
        if under_slurm and gpus.from_environment:
            # A local snakemake inside a bigger allocation: its devices are numbered within the allocation.
            lock_dir = lock_dir / f"slurm-{environ['SLURM_JOB_ID']}"
    if timeout_s is None and environ.get(WAIT_VARIABLE):
        timeout_s = _seconds(environ[WAIT_VARIABLE])
    pool = DevicePool(gpus.devices, lock_dir)
    lease = pool.take(count, holder, timeout_s=timeout_s, poll_s=poll_s, on_wait=on_wait)
    value = ",".join(lease.devices)
    environ[gpus.variable] = value
    if gpus.detected == "nvidia":
        # NVML numbers GPUs in PCI bus order; CUDA does too only when asked (its default is fastest first).
        environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    pooled = ",".join(gpus.devices)
    how = f"from the device pool: {gpus.variable}={value} of {pooled} ({gpus.source}; locks in {lock_dir})"
    return JobDevices(lease.devices, gpus.variable, how, lease)


def threads_for_job(cores: int | None, gpus_given: int | None, job_gpus: int) -> int:
    """A job's CPU threads, from Snakemake's --cores and --resources gpu=N:

    - a job without a GPU, or no `--resources gpu=N`: every core, so jobs run one at a time and no CPU
      measurement shares the machine;
    - a GPU job under `--resources gpu=N`: its share, cores x its GPUs / N (at least 1), so that N jobs on
      N GPUs do not fight over the cores;
    - no --cores (a cluster executor): THREADS_WITHOUT_CORES per GPU, at least that many.
    """
    if cores is None:
        return THREADS_WITHOUT_CORES * max(1, job_gpus)
    if job_gpus <= 0 or not gpus_given:
        return cores
    return max(1, cores * job_gpus // gpus_given)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FtcompareError(f"{WAIT_VARIABLE}={text!r}: must be a number of seconds") from None
    if value < 0:
        raise FtcompareError(f"{WAIT_VARIABLE}={text!r}: must be 0 or more seconds")
    return value
