"""The speed options beyond the blog's recipe, resolved once per run into a frozen record.

What each option does and why: docs/performance.md ("Speed options"); each key: config/config.schema.yaml.
`auto` settings are resolved here (bf16 where the GPU has it, torch.compile where inductor can build
kernels), so the trainer, the log and metrics.json read one answer.
"""

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass

import torch

from ftcompare.errors import FtcompareError

# Attention kernels that build a dense mask from position_ids (rather than varlen boundaries).
DENSE_MASK_ATTENTION = ("sdpa", "eager")
# The training keys that decide speed or numerics, as metrics.json's `options` reports them.
OPTION_KEYS = (
    "packing",
    "drop_padding_mask",
    "lm_head_loss",
    "torch_compile",
    "bf16",
    "fp16",
    "gradient_checkpointing",
    "attn_implementation",
    "optim",
    "group_by_length",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_seq_length",
    "lr_scheduler_type",
    "warmup_ratio",
    "max_grad_norm",
    "weight_decay",
)


@dataclass(frozen=True)
class SpeedOptions:
    """A run's speed options with `auto` resolved for its device."""

    bf16: bool
    torch_compile: bool
    torch_compile_reason: str
    packed_layout: str | None  # "rows" (one packed bin per row), "flat" (TRL's one row per batch), None


def resolve_speed_options(training: dict, device: str) -> SpeedOptions:
    torch_compile, reason = resolve_torch_compile(training["torch_compile"], device)
    return SpeedOptions(
        bf16=resolve_bf16(training["bf16"], device),
        torch_compile=torch_compile,
        torch_compile_reason=reason,
        packed_layout=packed_layout(training),
    )


def resolve_bf16(setting, device: str) -> bool:
    """`auto`: bf16 autocast on a GPU that supports it (fp32 weights stay the master copy), else fp32."""
    if setting == "auto":
        return device == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(setting)


def resolve_torch_compile(setting, device: str) -> tuple[bool, str]:
    """(compile or not, why). `auto`: where inductor can build kernels: Triton on a GPU, a C++ compiler on the CPU.

    `true` where inductor cannot build them is refused here, before the model loads, rather than by
    inductor in the middle of the first step.
    """
    if setting is False:
        return False, "off in the config"
    missing = _missing_kernel_toolchain(device)
    if setting is True:
        if missing:
            raise FtcompareError(
                f"training.torch_compile: true, but {missing}. Install it, or set "
                "torch_compile to auto (compile where possible) or false."
            )
        return True, "asked for in the config"
    if missing:
        return False, f"auto: {missing}"
    return True, (
        "auto: Triton is installed"
        if device == "cuda"
        else f"auto: inductor builds CPU kernels with {shutil.which(inductor_cpp_compiler())}"
    )


def _missing_kernel_toolchain(device: str) -> str | None:
    """What inductor lacks to build kernels for `device`, or None."""
    if device == "cuda":
        if importlib.util.find_spec("triton") is None:
            return "Triton, which inductor builds GPU kernels with, is not installed"
        return None
    compiler = inductor_cpp_compiler()
    if shutil.which(compiler) is None:
        return f"no C++ compiler {compiler!r} (inductor runs $CXX, else g++) is on PATH to build CPU kernels with"
    return None


def inductor_cpp_compiler() -> str:
    """The compiler inductor runs for CPU kernels (torch._inductor.config.cpp.cxx): $CXX, else g++ (clang++, macOS)."""
    return os.environ.get("CXX", "clang++" if sys.platform == "darwin" else "g++")


def packed_layout(training: dict) -> str | None:
    """How packed bins reach the model: "rows" (one bin per row) or "flat" (TRL's one row per batch)."""
    if not training["packing"]:
        return None
    return "rows" if training["attn_implementation"] in DENSE_MASK_ATTENTION else "flat"


def training_options(training: dict, speed: SpeedOptions) -> dict:
    """The speed and numerics options a run trained with, `auto` resolved (*_setting keeps the asked value)."""
    options = {key: training[key] for key in OPTION_KEYS}
    options["bf16"] = speed.bf16
    options["bf16_setting"] = training["bf16"]
    options["torch_compile"] = speed.torch_compile
    options["torch_compile_setting"] = training["torch_compile"]
    options["packed_layout"] = speed.packed_layout
    return options
