"""The training recipe's pieces (ftcompare.training): PEFT's count for the blog's LoraConfig, the
option mapping, throughput bookkeeping, log-history rows and elapsed time across a resume. Whole
(tiny) training runs are in test_training_runs.py."""

import pytest
import torch
from peft import get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, TrainerState

from ftcompare.config import run_settings, validate_config
from ftcompare.training import (
    ProgressRecorder,
    TokenCountingCollator,
    build_lora_config,
    build_sft_config,
    count_parameters,
    loss_rows,
    steady_throughput,
)

LLAMA_2_7B = dict(
    vocab_size=32000,
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    max_position_embeddings=4096,
    tie_word_embeddings=False,
)


def test_blog_lora_config_on_llama_2_7b_shape_counts_like_the_blog(blog_config):
    """The blog printed: trainable params: 4,194,304 || all params: 6,742,609,920."""
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**LLAMA_2_7B))
    assert count_parameters(model) == (6_738_415_616, 6_738_415_616)
    peft_model = get_peft_model(model, build_lora_config(run_settings(blog_config, "lora")["lora"]))
    assert count_parameters(peft_model) == (4_194_304, 6_742_609_920)
    targeted = {name.split(".")[-4] for name, _ in peft_model.named_parameters() if "lora_A" in name}
    assert targeted == {"q_proj", "v_proj"}


def test_sft_config_maps_the_blog_training_arguments(blog_config, tmp_path):
    settings = run_settings(blog_config, "lora")
    args = build_sft_config(settings["training"], settings["seed"], tmp_path, device="cpu")
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
    assert args.max_length == 512
    assert args.report_to == ["tensorboard"]
    full = run_settings(blog_config, "full")
    assert build_sft_config(full["training"], 42, tmp_path, "cpu").learning_rate == 4e-7


def test_run_overrides_reach_only_their_run(default_config):
    config = validate_config(
        {
            **default_config,
            "runs": {
                "lora": {"method": "lora"},
                "lora-r64": {
                    "method": "lora",
                    "lora": {"r": 64, "lora_alpha": 16},
                    "training": {"learning_rate": 1e-4},
                },
                "full": {"method": "full"},
            },
        }
    )
    assert run_settings(config, "lora")["lora"]["r"] == 8
    assert run_settings(config, "lora-r64")["lora"] == {**config["lora"], "r": 64, "lora_alpha": 16}
    assert run_settings(config, "lora-r64")["training"]["learning_rate"] == 1e-4
    assert "lora" not in run_settings(config, "full")


def test_token_counter_counts_padding_apart():
    def collate(features):
        width = max(len(f) for f in features)
        ids = torch.tensor([f + [0] * (width - len(f)) for f in features])
        mask = torch.tensor([[1] * len(f) + [0] * (width - len(f)) for f in features])
        return {"input_ids": ids, "attention_mask": mask}

    counter = TokenCountingCollator(collate)
    counter([[5, 6, 7], [5]])
    counter([[1, 2], [3, 4]])
    assert (counter.samples, counter.tokens, counter.nonpad_tokens) == (4, 10, 8)


def test_steady_throughput_excludes_warmup_steps():
    # step, seconds, samples, tokens, nonpad: a slow first step, then 1 step/s of 4 samples
    steps = [(0, 0.0, 0, 0, 0), (1, 5.0, 4, 400, 300)]
    steps += [(i, 5.0 + (i - 1), 4 * i, 400 * i, 300 * i) for i in range(2, 12)]
    result = steady_throughput(steps)
    assert result["warmup_steps"] == 2
    assert result["samples_per_s"] == pytest.approx(4.0)
    assert result["tokens_per_s"] == pytest.approx(400.0)
    assert result["nonpad_tokens_per_s"] == pytest.approx(300.0)
    assert steady_throughput([(0, 0.0, 0, 0, 0)])["samples_per_s"] is None


def test_loss_rows_keep_one_row_per_step_in_order():
    history = [
        {"loss": 2.0, "step": 1, "epoch": 0.1, "learning_rate": 1e-3, "grad_norm": 1.0, "elapsed_s": 0.5},
        {"eval_loss": 1.9, "step": 1},
        {"loss": 1.5, "step": 10, "epoch": 0.5, "learning_rate": 1e-3, "grad_norm": 0.7, "elapsed_s": 4.0},
        {"loss": 1.5, "step": 10, "epoch": 0.5, "learning_rate": 1e-3, "grad_norm": 0.7, "elapsed_s": 4.0},
        {"train_runtime": 9.0, "step": 20},
    ]
    rows = loss_rows(history)
    assert [r["step"] for r in rows] == [1, 10]
    assert rows[1] == {"step": 10, "epoch": 0.5, "loss": 1.5, "learning_rate": 1e-3, "grad_norm": 0.7, "elapsed_s": 4.0}


def test_elapsed_time_continues_from_the_checkpoint():
    recorder = ProgressRecorder(TokenCountingCollator(lambda features: features))
    fresh = TrainerState(stateful_callbacks=[recorder])
    assert fresh.stateful_callbacks["ProgressRecorder"] == {"args": {}, "attributes": {"elapsed_s": 0.0}}

    resumed = TrainerState(
        stateful_callbacks={"ProgressRecorder": {"args": {}, "attributes": {"elapsed_s": 81.5}}},
        log_history=[{"step": 5, "loss": 2.0, "elapsed_s": 70.0}],
    )
    recorder.on_train_begin(None, resumed, None)
    try:
        assert recorder.elapsed_offset == 81.5
        assert recorder.state()["attributes"]["elapsed_s"] >= 81.5
    finally:
        recorder.restore_sigterm_handler()

    older = TrainerState(log_history=[{"step": 5, "loss": 2.0, "elapsed_s": 70.0}, {"eval_loss": 1.0}])
    recorder = ProgressRecorder(TokenCountingCollator(lambda features: features))
    recorder.on_train_begin(None, older, None)
    recorder.restore_sigterm_handler()
    assert recorder.elapsed_offset == 70.0
    assert "ProgressRecorder" in older.stateful_callbacks  # so the Trainer can save its state there
