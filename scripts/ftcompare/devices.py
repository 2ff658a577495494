"""Which device a job runs on: the config's `device` against what torch can see."""

import logging

import torch

from ftcompare.errors import FtcompareError

log = logging.getLogger("ftcompare.devices")


def resolve_device(requested: str) -> str:
    """`auto` → "cuda" when torch sees a GPU (CUDA or ROCm builds), else "cpu" with one warning.

    `cuda` without a visible GPU is refused rather than silently running for days on the CPU.
    """
    has_gpu = torch.cuda.is_available()
    if requested == "cpu":
        return "cpu"
    if has_gpu:
        return "cuda"
    if requested == "cuda":
        raise FtcompareError(
            "device = 'cuda' but torch sees no GPU (torch.cuda.is_available() is False; torch "
            f"{torch.__version__}, built for {torch_build()}). Install a CUDA or ROCm build of torch, "
            "check CUDA_VISIBLE_DEVICES / HIP_VISIBLE_DEVICES, or set `device: auto` to allow the CPU."
        )
    log.warning("no GPU visible to torch: running on the CPU (set `device: cuda` to require a GPU)")
    return "cpu"


def torch_build() -> str:
    """ "ROCm x.y", "CUDA x.y" or "CPU": what this torch was compiled for."""
    if getattr(torch.version, "hip", None):
        return f"ROCm {torch.version.hip}"
    if torch.version.cuda:
        return f"CUDA {torch.version.cuda}"
    return "CPU"


def torch_version_and_build() -> str:
    """ "torch 2.x (CPU build)" (or CUDA x.y, ROCm x.y): what a job records and the report compares."""
    return f"torch {torch.__version__} ({torch_build()} build)"


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    import platform

    return platform.processor() or platform.machine() or "cpu"


def set_cpu_threads(threads: int | None) -> None:
    """Use the cores Snakemake gave the job, so two jobs never fight over the same cores."""
    if threads:
        torch.set_num_threads(max(1, int(threads)))
