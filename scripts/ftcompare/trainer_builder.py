"""One place that builds a run's trainer, for the train rule and the bench alike.

`build_trainer` reads top to bottom like a torchtune recipe's setup(): speed options, tokenizer and
model (4-bit for qlora), adapter, trainer arguments, trainer over the data, loss path, collator,
callbacks. The config keeps the blog's TrainingArguments names (group_by_length, warmup_ratio);
build_sft_config maps them onto the current transformers/TRL API.
"""

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig

from ftcompare.adapters import add_adapter, keep_adapter_in_float32
from ftcompare.callbacks import StepTimer
from ftcompare.collators import TokenCountingCollator, install_collator
from ftcompare.data_order import SeededSFTTrainer
from ftcompare.lm_head_loss import use_lm_head_loss
from ftcompare.parallel import check_strategy_applied, model_placement, trainer_arguments
from ftcompare.parameters import ParameterCount, count_parameters
from ftcompare.quantization import bnb_config, device_map, keep_weights_trainable
from ftcompare.speed_options import SpeedOptions, resolve_speed_options

log = logging.getLogger("ftcompare.trainer_builder")

TEXT_COLUMN = "text"


@dataclass(frozen=True)
class TrainerSpec:
    """What a trainer is built from: a run's settings (config.run_settings) and where it runs."""

    base_model: Path
    method: str
    training: dict
    lora: dict | None
    seed: int
    device: str
    dtype: str
    output_dir: Path
    trust_remote_code: bool = False
    save_checkpoints: bool = True
    tensorboard_dir: Path | None = None
    quantization: dict | None = None  # qlora: how the base model is loaded in 4-bit


@dataclass
class BuiltTrainer:
    trainer: SeededSFTTrainer
    tokenizer: transformers.PreTrainedTokenizerBase
    speed: SpeedOptions
    parameters: ParameterCount
    tokens: TokenCountingCollator
    timer: StepTimer


def build_trainer(spec: TrainerSpec, train_data: datasets.Dataset, eval_data: datasets.Dataset) -> BuiltTrainer:
    transformers.set_seed(spec.seed)
    speed = resolve_speed_options(spec.training, spec.device)

    tokenizer = AutoTokenizer.from_pretrained(str(spec.base_model), trust_remote_code=spec.trust_remote_code)
    model = load_model(
        spec.base_model,
        spec.dtype,
        spec.training["attn_implementation"],
        spec.trust_remote_code,
        quantization=spec.quantization if spec.method == "qlora" else None,
        device=spec.device,
        placement=model_placement(spec.training),
    )
    model = add_adapter(model, spec.method, spec.lora)
    parameters = count_parameters(model)

    if spec.tensorboard_dir is not None:
        # transformers' TensorBoardCallback reads its folder from the environment when the trainer is built.
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(spec.tensorboard_dir)
    args = build_sft_config(spec.training, spec.seed, spec.output_dir, spec.device, speed)
    if not spec.save_checkpoints:
        args.save_strategy = "no"
    trainer = SeededSFTTrainer(
        model=model, args=args, train_dataset=train_data, eval_dataset=eval_data, processing_class=tokenizer
    )
    check_strategy_applied(spec.training, trainer)
    if spec.method == "qlora":
        keep_adapter_in_float32(trainer.model)

    use_lm_head_loss(trainer, spec.training)
    tokens = install_collator(trainer, spec.training, speed.packed_layout)
    timer = StepTimer(tokens)
    trainer.add_callback(timer)
    return BuiltTrainer(trainer, tokenizer, speed, parameters, tokens, timer)


def load_model(
    path,
    dtype: str,
    attn_implementation: str,
    trust_remote_code: bool,
    quantization: dict | None = None,
    device="cpu",
    placement: dict | None = None,
):
    """The base model as training starts from it: in `dtype`, or with its linear layers in 4-bit for qlora;
    `placement` spreads it over several GPUs (training.strategy: device_map)."""
    options = dict(placement or {})
    if quantization is not None:
        options = {"quantization_config": bnb_config(quantization, device), "device_map": device_map(device)}
    model = AutoModelForCausalLM.from_pretrained(
        str(path),
        dtype=dtype if dtype == "auto" else getattr(torch, dtype),
        attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code,
        **options,
    )
    if quantization is not None:
        keep_weights_trainable(model)
    return model


def build_sft_config(training: dict, seed: int, output_dir: Path, device: str, speed: SpeedOptions) -> SFTConfig:
    return SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=training["num_train_epochs"],
        max_steps=training["max_steps"],
        per_device_train_batch_size=training["per_device_train_batch_size"],
        per_device_eval_batch_size=training["per_device_eval_batch_size"],
        gradient_accumulation_steps=training["gradient_accumulation_steps"],
        optim=training["optim"],
        learning_rate=training["learning_rate"],
        weight_decay=training["weight_decay"],
        max_grad_norm=training["max_grad_norm"],
        # transformers 5 folded warmup_ratio into warmup_steps: a float below 1 is a ratio.
        warmup_steps=float(training["warmup_ratio"]),
        lr_scheduler_type=training["lr_scheduler_type"],
        train_sampling_strategy="group_by_length" if training["group_by_length"] else "random",
        logging_steps=training["logging_steps"],
        logging_first_step=True,
        save_strategy="steps",
        save_steps=training["save_steps"],
        save_total_limit=training["save_total_limit"],
        eval_strategy="no",
        fp16=training["fp16"],
        bf16=speed.bf16,
        # Under FSDP, its own activation checkpointing instead (parallel.trainer_arguments).
        activation_checkpointing=training["gradient_checkpointing"] and training["strategy"] != "fsdp",
        torch_compile=speed.torch_compile,
        torch_compile_backend="inductor" if speed.torch_compile else None,
        report_to=list(training["report_to"]),
        seed=seed,
        data_seed=seed,
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
        disable_tqdm=True,
        dataset_text_field=TEXT_COLUMN,
        max_length=training["max_seq_length"],
        packing=training["packing"],
        packing_strategy="bfd",  # whole sequences per bin, never cut; boundaries kept (collators.PackedRowsCollator)
        # Held-out loss is measured on unpacked batches in every run, so runs with and without packing compare.
        eval_packing=False,
        **trainer_arguments(training),
    )
