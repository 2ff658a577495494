"""The trainer builder (ftcompare.trainer_builder): the blog's TrainingArguments mapped onto TRL's SFTConfig."""

import pytest

from ftcompare.config import run_settings
from ftcompare.speed_options import resolve_speed_options
from ftcompare.trainer_builder import build_sft_config


def test_sft_config_maps_the_blog_training_arguments(blog_config, tmp_path):
    settings = run_settings(blog_config, "lora")
    speed = resolve_speed_options(settings["training"], "cpu")
    args = build_sft_config(settings["training"], settings["seed"], tmp_path, "cpu", speed)
    assert args.learning_rate == 4e-5
    assert args.per_device_train_batch_size == 4
    assert args.gradient_accumulation_steps == 1
    assert args.optim.value == "paged_adamw_32bit"
    assert args.weight_decay == 0.001
    assert args.max_grad_norm == 0.3
    assert args.warmup_steps == pytest.approx(0.03)
    assert args.get_warmup_steps(250) == 8  # ceil(0.03 * 250)
    assert args.lr_scheduler_type.value == "constant"
    assert args.train_sampling_strategy == "group_by_length"
    assert args.logging_steps == 50 and args.save_steps == 50
    assert args.num_train_epochs == 1
    assert not args.fp16 and not args.bf16
    assert args.max_length == 1024  # TRL 0.4.7: min(tokenizer.model_max_length, 1024)
    assert args.report_to == ["tensorboard"]
    full = run_settings(blog_config, "full")
    assert build_sft_config(full["training"], 42, tmp_path, "cpu", speed).learning_rate == 4e-7
