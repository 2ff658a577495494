"""The 4-bit base model of a qlora run, as QLoRA (Dettmers et al. 2023) loads it: bitsandbytes through
transformers' BitsAndBytesConfig, the run's `quantization` section setting its options."""

import logging

import torch
from transformers import BitsAndBytesConfig

log = logging.getLogger("ftcompare.quantization")


def resolve_compute_dtype(setting: str, device: str) -> str:
    """`auto`: bfloat16 where the device computes it natively, else float32.

    bfloat16 runs on any CPU, but without AVX512-BF16 or AMX torch emulates it, slowly.
    """
    if setting != "auto":
        return setting
    if device == "cuda":
        native = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    else:
        native = _cpu_has_bf16()
    return "bfloat16" if native else "float32"


def _cpu_has_bf16() -> bool:
    checks = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(check() for check in checks if check is not None)


def resolved_quantization(quantization: dict, device: str) -> dict:
    """The settings with `auto` resolved, as metrics.json records them (*_setting keeps the asked value)."""
    resolved = dict(quantization)
    resolved["bnb_4bit_compute_dtype"] = resolve_compute_dtype(quantization["bnb_4bit_compute_dtype"], device)
    resolved["bnb_4bit_compute_dtype_setting"] = quantization["bnb_4bit_compute_dtype"]
    return resolved


def bnb_config(quantization: dict, device: str) -> BitsAndBytesConfig:
    """load_in_4bit with the run's data type, double quantization and compute dtype."""
    compute_dtype = resolve_compute_dtype(quantization["bnb_4bit_compute_dtype"], device)
    if quantization["bnb_4bit_compute_dtype"] == "auto":
        log.info("quantization.bnb_4bit_compute_dtype: auto → %s on %s", compute_dtype, device)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization["bnb_4bit_quant_type"],
        bnb_4bit_use_double_quant=quantization["bnb_4bit_use_double_quant"],
        bnb_4bit_compute_dtype=getattr(torch, compute_dtype),
    )


def device_map(device: str) -> dict:
    """bitsandbytes quantizes as the weights load onto their device: the whole model on the run's one."""
    return {"": torch.cuda.current_device() if device == "cuda" else "cpu"}


def keep_weights_trainable(model) -> None:
    """Keep bitsandbytes from repacking the 4-bit weights for its CPU inference kernel.

    bitsandbytes 0.50.2, on a CPU with AVX512-BF16, repacks a Linear4bit's weight at its first
    forward in eval mode without gradients (the evaluation before training), and from then on every
    forward of that layer runs a kernel without a backward: training would silently drop the
    gradient that flows back through each frozen 4-bit weight, and the adapters below it would
    learn from a wrong gradient.
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
