"""The workflow's speed options beyond the blog's recipe: bf16 where the GPU has it, the loss from
the whole logits, torch.compile, packed rows.

TRL's SFTTrainer computes the loss with a chunked LM head: the logits in tiles, never whole,
recomputed in the backward, plus the entropy and token accuracy it logs. That saves memory when the
vocabulary times the tokens of a batch is large, and costs time when it is small.
`lm_head_loss: full_logits` computes the logits whole and the loss as transformers' causal-LM loss
does (the way TRL did when the blog was written): the same loss, normalised the same way.

Packing (TRL's best-fit-decreasing bins of whole sequences) needs attention that stops at each
sequence's end. transformers builds that mask from `position_ids` that restart at 0 for each
sequence, when the batch carries no `attention_mask` and the forward keeps no cache (SFTTrainer
passes use_cache=False); flash-attention kernels read the same boundaries. TRL's own collator for
packed data lays the whole batch end to end in one row, so sdpa and eager attend over
(batch x max_length)^2 positions, most of them masked; PackedRowsCollator keeps one packed bin per
row, which gives the same loss for a quarter of that attention at batch size 4.

`drop_padding_mask` sends right-padded batches to the model without their attention mask. Under the
causal mask no real token attends to the padding after it, and the padding carries no labels, so the
loss and every gradient are those of the masked batch; positions are the same 0, 1, 2, ... on both
ways. sdpa then attends with its causal kernel instead of a dense mask transformers builds per batch.
A batch padded on the left keeps its mask.

torch.compile (inductor) fuses the small operations between the matrix products (norms, rotary
embedding, SiLU, dropout, the loss) into a few generated kernels: the same model and the same
learning, up to float rounding and the random numbers LoRA's dropout draws. The first steps pay the
compilation (tens of seconds on a CPU; inductor keeps what it built in its cache for the next run).
Inductor builds CPU kernels with a C++ compiler and GPU kernels with Triton; `auto` compiles where
the one it needs is there.
"""

import functools
import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass

import torch
import transformers

from ftcompare.errors import FtcompareError

IGNORE_INDEX = -100
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


def training_options(training: dict, device: str) -> dict:
    """The speed and numerics options a run trained with, `auto` resolved (*_setting keeps the asked value)."""
    options = {key: training[key] for key in OPTION_KEYS}
    options["bf16"] = resolve_bf16(training["bf16"], device)
    options["bf16_setting"] = training["bf16"]
    options["torch_compile"] = resolve_torch_compile(training["torch_compile"], device)[0]
    options["torch_compile_setting"] = training["torch_compile"]
    options["packed_layout"] = packed_layout(training)
    return options


def packed_layout(training: dict) -> str | None:
    """How packed bins reach the model: "rows" (one bin per row) or "flat" (TRL's one row per batch)."""
    if not training["packing"]:
        return None
    return "rows" if training["attn_implementation"] in DENSE_MASK_ATTENTION else "flat"


@dataclass
class PackedRowsCollator:
    """Batches TRL-packed bins (`input_ids` plus `seq_lengths`) one bin per row, without an attention mask.

    Rows without `seq_lengths` (the held-out split, which is never packed) count as one sequence.

    position_ids restart at 0 for each sequence, so the model masks attention at every boundary; the
    padding after the last sequence of a row forms its own segment and carries no labels. The first
    token of each sequence carries no label either: it would be predicted from the previous sequence.
    """

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict:
        width = max(len(feature["input_ids"]) for feature in features)
        input_ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros((len(features), width), dtype=torch.long)
        for row, feature in enumerate(features):
            ids = torch.as_tensor(feature["input_ids"], dtype=torch.long)
            # Unpacked rows (the held-out split is never packed) are one sequence each.
            lengths = [int(n) for n in feature.get("seq_lengths", [len(ids)])]
            if sum(lengths) != len(ids):
                raise ValueError(f"packed row {row}: seq_lengths add up to {sum(lengths)}, input_ids has {len(ids)}")
            input_ids[row, : len(ids)] = ids
            labels[row, : len(ids)] = ids
            position_ids[row] = _restarting_positions(lengths + [width - len(ids)])
            starts = torch.tensor([0] + lengths[:-1]).cumsum(0)
            labels[row, starts] = IGNORE_INDEX
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}


def _restarting_positions(lengths: list[int]) -> torch.Tensor:
    return torch.cat([torch.arange(n) for n in lengths if n > 0])


def training_collator(trainer, training: dict):
    """The collator a run's trainer should batch with: PackedRowsCollator for packed data on sdpa/eager."""
    if packed_layout(training) == "rows":
        return PackedRowsCollator(pad_token_id=trainer.data_collator.pad_token_id)
    return trainer.data_collator


@dataclass
class WithoutPaddingMask:
    """Batches of `inner` without their attention mask where every row is padded on the right only."""

    inner: object

    def __call__(self, features: list[dict]) -> dict:
        batch = self.inner(features)
        mask = batch.get("attention_mask")
        if mask is not None and is_right_padded(mask):
            del batch["attention_mask"]
        return batch


def is_right_padded(attention_mask: torch.Tensor) -> bool:
    """Every row is ones, then zeros (no padding at all counts)."""
    return bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all())


def use_lm_head_loss(trainer, training: dict) -> None:
    """Give the trainer the loss path `training["lm_head_loss"]` names (TRL's chunked head is its own)."""
    if training["lm_head_loss"] == "full_logits":
        trainer.compute_loss = functools.partial(full_logits_loss, trainer)


def full_logits_loss(trainer, model, inputs, return_outputs=False, num_items_in_batch=None):
    """transformers' Trainer.compute_loss: the model's own loss over the whole logits.

    use_cache=False as SFTTrainer's own passes it, whatever the model's config says: with a cache,
    transformers would not read packed sequences' boundaries from position_ids.
    """
    return transformers.Trainer.compute_loss(
        trainer,
        model,
        {**inputs, "use_cache": False},
        return_outputs=return_outputs,
        num_items_in_batch=num_items_in_batch,
    )
