"""Whole training runs of a tiny model through train_run (ftcompare.training): torch.compile and the
dropped padding mask learn what the plain run learns, blog.yaml's training section runs with its paged
optimizer, a QLoRA run learns and resumes, a missing compiler is refused before training,
SIGTERM saves a checkpoint and fails, a resumed run's TensorBoard log has every step once, a run
without TensorBoard still makes its output folder, and out-of-memory names the run, the peak and what
to try."""

import errno
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from fakes.telemetry import FakeTelemetry
from helpers.tiny_run import make_tiny_run, run_paths, settings_for

from ftcompare.callbacks import StepTimer
from ftcompare.checkpoints import is_complete
from ftcompare.config import run_settings
from ftcompare.data_order import SeededSFTTrainer
from ftcompare.errors import FtcompareError
from ftcompare.speed_options import resolve_torch_compile
from ftcompare.training import loss_rows, train_run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny Llama and word-level tokenizer saved like a base model, and train/eval Parquet files."""
    return make_tiny_run(tmp_path_factory.mktemp("tiny-run"))


@pytest.fixture
def sigterm_at_step_2(monkeypatch):
    """Send this process SIGTERM at the end of step 2, as SLURM would before a kill."""
    on_step_end = StepTimer.on_step_end

    def terminating(self, args, state, control, **kwargs):
        if state.global_step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return on_step_end(self, args, state, control, **kwargs)

    monkeypatch.setattr(StepTimer, "on_step_end", terminating)


@pytest.mark.slow
@pytest.mark.skipif(
    not resolve_torch_compile("auto", "cpu")[0],
    reason="inductor needs a C++ compiler on the CPU: bash tests/setup_system.sh",
)
@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_compiled_run_learns_what_the_eager_run_learns(tiny_run, tmp_path, method):
    """torch_compile: the trainer runs inductor's kernels, and the losses match the eager run's."""
    from torch._dynamo.utils import counters

    # No LoRA dropout: inductor draws its own random numbers, so the two runs would drop different units.
    training = {"learning_rate": 1e-2, "max_steps": 6}
    results = {}
    for compiled in (False, True):
        counters.clear()
        settings = settings_for(method, **training, torch_compile=compiled)
        if method == "lora":
            settings["lora"]["lora_dropout"] = 0.0
        paths = run_paths(tiny_run, tmp_path / str(compiled))
        metrics, rows = train_run(settings, paths, "cpu", "float32", False, {"f": 1}, FakeTelemetry())
        results[compiled] = (metrics, [row["loss"] for row in rows], counters["stats"]["unique_graphs"])
        assert metrics.options["torch_compile"] is compiled
    (eager, eager_losses, eager_graphs), (compiled, compiled_losses, compiled_graphs) = results[False], results[True]
    assert eager_graphs == 0 and compiled_graphs > 0
    assert eager.eval_loss < eager.eval_loss_before_training  # it learned something to compare
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-4)
    assert compiled.eval_loss == pytest.approx(eager.eval_loss, rel=1e-4)
    # The saved weights are the model's, not the compiled wrapper's (no "_orig_mod." in their names).
    from safetensors import safe_open

    saved = next((tmp_path / "True" / "model").glob("*.safetensors"))
    with safe_open(str(saved), "pt") as handle:
        assert handle.keys() and not any("_orig_mod" in key for key in handle.keys())


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_run_without_the_padding_mask_learns_what_the_masked_run_learns(tiny_run, tmp_path, monkeypatch, method):
    """drop_padding_mask: the model sees padded batches without a mask, and every loss is the masked run's.

    LoRA keeps its dropout: both runs draw the same random numbers for the same (padded) shapes.
    """
    from ftcompare.collators import WithoutPaddingMask

    seen = []  # (padding in the batch, mask passed on) for each batch the model was given unmasked-able
    collate = WithoutPaddingMask.__call__

    def spying(self, features):
        mask = self.inner(features)["attention_mask"]
        batch = collate(self, features)
        seen.append((bool((mask == 0).any()), "attention_mask" in batch))
        return batch

    monkeypatch.setattr(WithoutPaddingMask, "__call__", spying)
    results = {}
    for drop in (False, True):
        settings = settings_for(
            method, learning_rate=1e-2, max_steps=6, drop_padding_mask=drop, lm_head_loss="full_logits"
        )
        metrics, rows = train_run(
            settings, run_paths(tiny_run, tmp_path / str(drop)), "cpu", "float32", False, {"f": 1}, FakeTelemetry()
        )
        assert metrics.options["drop_padding_mask"] is drop
        results[drop] = (metrics, [row["loss"] for row in rows])
    assert seen and (True, False) in seen and not any(passed for _, passed in seen)  # padded, and no mask passed
    (masked, masked_losses), (unmasked, unmasked_losses) = results[False], results[True]
    assert masked.eval_loss < masked.eval_loss_before_training  # it learned something to compare
    assert unmasked_losses == pytest.approx(masked_losses, rel=1e-5)
    assert unmasked.eval_loss == pytest.approx(masked.eval_loss, rel=1e-5)
    # The token counts still tell padding apart.
    assert unmasked.train_nonpad_tokens_per_s < unmasked.train_tokens_per_s


@pytest.mark.slow
def test_the_blog_training_section_runs_as_written_with_the_paged_optimizer(
    tiny_run, tmp_path, monkeypatch, blog_config
):
    """config/blog.yaml's `training:` untouched (fp32, paged_adamw_32bit, one epoch of batch 4) on the tiny model."""
    import bitsandbytes as bnb

    built = []
    create_optimizer = SeededSFTTrainer.create_optimizer

    def recording(self, *args, **kwargs):
        built.append(create_optimizer(self, *args, **kwargs))
        return built[-1]

    monkeypatch.setattr(SeededSFTTrainer, "create_optimizer", recording)
    settings = run_settings(blog_config, "lora")
    assert settings["training"]["optim"] == "paged_adamw_32bit"
    paths = run_paths(tiny_run, tmp_path)
    metrics, rows = train_run(settings, paths, "cpu", "float32", False, {"f": 1}, FakeTelemetry())
    assert metrics.train_steps == 5 and metrics.options["optim"] == "paged_adamw_32bit"  # 20 rows, batches of 4
    # transformers builds paged_adamw_32bit as bitsandbytes' AdamW(optim_bits=32, is_paged=True), which is
    # what bnb.optim.PagedAdamW32bit passes too; on the CPU it steps unpaged.
    [optimizer] = built
    assert type(optimizer) is bnb.optim.AdamW and optimizer.is_paged and optimizer.args.optim_bits == 32
    trained = [p for group in optimizer.param_groups for p in group["params"]]
    assert len(trained) == 4  # lora_A and lora_B on q_proj and v_proj of the one layer
    for parameter in trained:
        state = optimizer.state[parameter]
        assert state["step"] == 5 and state["state1"].dtype == state["state2"].dtype == torch.float32
    assert rows and paths.model_out.is_dir()


@pytest.mark.slow
def test_a_qlora_run_learns_on_the_4_bit_base_and_resumes_where_it_left_off(tiny_run, tmp_path):
    """QLoRA end to end through train_run; killed after step 4 before its checkpoint, it resumes from
    step 2 and ends with the uninterrupted run's losses and adapter (kept in fp32 through the resume)."""
    from safetensors import safe_open

    settings = settings_for("qlora", learning_rate=1e-2, max_steps=4, save_steps=2)
    paths = run_paths(tiny_run, tmp_path)
    metrics, rows = train_run(settings, paths, "cpu", "float32", False, {"f": 1}, FakeTelemetry())
    assert metrics.method == "qlora" and metrics.trainable_params == 512  # r 8 on q_proj, v_proj of 16 x 16
    assert metrics.quantization == {
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True,
        "bnb_4bit_compute_dtype": "bfloat16",
        "bnb_4bit_compute_dtype_setting": "bfloat16",
    }
    assert metrics.eval_loss < metrics.eval_loss_before_training
    adapter = paths.model_out / "adapter_model.safetensors"
    with safe_open(str(adapter), "pt") as handle:
        assert {handle.get_tensor(key).dtype for key in handle.keys()} == {torch.float32}
    uninterrupted = adapter.read_bytes()

    shutil.rmtree(paths.checkpoints / "checkpoint-4")
    resumed, resumed_rows = train_run(settings, paths, "cpu", "float32", False, {"f": 1}, FakeTelemetry())
    assert resumed.resumed_from_step == 2
    assert [row["loss"] for row in resumed_rows] == [row["loss"] for row in rows]
    assert resumed.eval_loss == metrics.eval_loss and adapter.read_bytes() == uninterrupted


def test_compiling_without_a_compiler_is_refused_before_training(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-c++")
    paths = run_paths(tiny_run, tmp_path)
    with pytest.raises(FtcompareError, match=r"^training.torch_compile: true, but no C\+\+ compiler"):
        train_run(settings_for(torch_compile=True), paths, "cpu", "float32", False, {"f": 1}, FakeTelemetry())
    assert not paths.model_out.exists() and not paths.checkpoints.exists()


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_stops_and_fails(tiny_run, tmp_path, sigterm_at_step_2):
    handler_before = signal.getsignal(signal.SIGTERM)
    paths = run_paths(tiny_run, tmp_path)
    with pytest.raises(FtcompareError) as caught:
        train_run(settings_for(), paths, "cpu", "float32", False, {"f": 1}, FakeTelemetry())
    assert str(caught.value) == (
        f"run lora: stopped by SIGTERM at step 2; a checkpoint was saved in {paths.checkpoints}. Rerun to resume."
    )
    assert is_complete(paths.checkpoints / "checkpoint-2")
    state = json.loads((paths.checkpoints / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["stateful_callbacks"]["StepTimer"]["attributes"]["elapsed_s"] > 0
    assert not paths.model_out.exists()
    assert signal.getsignal(signal.SIGTERM) is handler_before


@pytest.mark.slow
def test_a_full_disk_while_saving_keeps_the_previous_checkpoint_and_says_so(tiny_run, tmp_path, monkeypatch):
    """ENOSPC in the middle of the second save: the first checkpoint stays, the cut-off one goes, and a
    rerun resumes from the first."""
    import transformers

    save_rng_state = transformers.Trainer._save_rng_state

    def disk_full_at_step_2(self, output_dir):
        if self.state.global_step == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(Path(output_dir) / "rng_state.pth"))
        return save_rng_state(self, output_dir)

    monkeypatch.setattr(transformers.Trainer, "_save_rng_state", disk_full_at_step_2)
    paths = run_paths(tiny_run, tmp_path)
    settings = settings_for(save_steps=1)
    with pytest.raises(FtcompareError) as caught:
        train_run(settings, paths, "cpu", "float32", False, {"f": 1}, FakeTelemetry())
    first = paths.checkpoints / "checkpoint-1"
    message = str(caught.value)
    assert message.startswith(
        f"run lora: the disk is full (ENOSPC) while saving a checkpoint to {paths.checkpoints / 'checkpoint-2'}; "
        f"the previous checkpoint {first} is intact ("
    )
    assert "GB; the next one needs as much again) and a rerun resumes from it" in message
    assert is_complete(first) and not (paths.checkpoints / "checkpoint-2").exists()
    assert not paths.model_out.exists()

    monkeypatch.setattr(transformers.Trainer, "_save_rng_state", save_rng_state)
    metrics, _ = train_run(settings, paths, "cpu", "float32", False, {"f": 1}, FakeTelemetry())
    assert metrics.resumed_from_step == 1 and metrics.train_steps == 4


@pytest.mark.slow
def test_a_resumed_run_s_tensorboard_log_has_every_step_once(tiny_run, tmp_path):
    """The steps logged after the last checkpoint by the interrupted job are dropped, not shown twice."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def logged_steps(folder: Path) -> dict:
        events = EventAccumulator(str(folder))
        events.Reload()
        return {tag: [event.step for event in events.Scalars(tag)] for tag in ("train/loss", "eval/loss")}

    paths = run_paths(tiny_run, tmp_path)
    settings = settings_for(max_steps=4, save_steps=2, report_to=["tensorboard"])
    train_run(settings, paths, "cpu", "float32", False, {"f": 1}, FakeTelemetry())
    # The eval loss before training (step 0) and after it (step 4).
    assert logged_steps(paths.tensorboard) == {"train/loss": [1, 2, 3, 4], "eval/loss": [0, 4]}
    # As if the job was killed after logging step 4, before its checkpoint was saved: steps 3 and 4 again.
    shutil.rmtree(paths.checkpoints / "checkpoint-4")
    metrics, _ = train_run(settings, paths, "cpu", "float32", False, {"f": 1}, FakeTelemetry())
    assert metrics.resumed_from_step == 2
    assert logged_steps(paths.tensorboard) == {"train/loss": [1, 2, 3, 4], "eval/loss": [0, 4]}
    assert len(list(paths.tensorboard.glob("events.out.tfevents.*"))) > 1  # written by both jobs


@pytest.mark.slow
def test_a_run_that_logs_to_no_tensorboard_still_makes_its_tensorboard_output(tiny_run, tmp_path):
    """The train rule declares the folder, so it must exist (empty) when report_to is []."""
    paths = run_paths(tiny_run, tmp_path)
    telemetry = FakeTelemetry()
    train_run(settings_for(max_steps=2, report_to=[]), paths, "cpu", "float32", False, {"f": 1}, telemetry)
    assert paths.tensorboard.is_dir() and not any(paths.tensorboard.iterdir())
    # The sampler's peaks are reset once, as training starts, so they are the training's.
    assert telemetry.peak_resets == 1 and "train" in telemetry.phases


@pytest.mark.slow
@pytest.mark.parametrize(
    "method,advice", [("lora", "a smaller lora.r or the qlora method"), ("full", "the lora or qlora method")]
)
def test_out_of_memory_names_the_run_the_peak_and_what_to_try(tiny_run, tmp_path, monkeypatch, method, advice):
    mib = 2**20

    def out_of_memory(self, *args, **kwargs):
        # What torch would report on a GPU that filled up (this machine may have none).
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 70_000 * mib)
        monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda *a: 79_500 * mib)
        monkeypatch.setattr(
            torch.cuda, "get_device_properties", lambda *a: type("Properties", (), {"total_memory": 81_559 * mib})
        )
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU 80GB")
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(SeededSFTTrainer, "train", out_of_memory)
    paths = run_paths(tiny_run, tmp_path)
    with pytest.raises(FtcompareError) as caught:
        train_run(settings_for(method), paths, "cuda", "float32", False, {"f": 1}, FakeTelemetry())
    assert str(caught.value) == (
        f"run {method}: out of GPU memory (peak 70,000 MiB allocated and 79,500 MiB reserved by torch, of "
        "81,559 MiB on Fake GPU 80GB). Try a smaller per_device_train_batch_size with more "
        f"gradient_accumulation_steps, training.gradient_checkpointing: true, bf16, or {advice}."
    )
    assert not paths.model_out.exists()


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


@pytest.fixture
def transformers_token_count(monkeypatch):
    """transformers' own count of the non-padding tokens each training saw (include_num_input_tokens_seen),
    taken at the end of training: an independent check of RunMetrics.tokens_seen."""
    import ftcompare.trainer_builder as trainer_builder

    seen = []
    build_sft_config = trainer_builder.build_sft_config

    def counting_config(*args, **kwargs):
        config = build_sft_config(*args, **kwargs)
        config.include_num_input_tokens_seen = "non_padding"
        return config

    def on_train_end(self, args, state, control, **kwargs):
        seen.append(state.num_input_tokens_seen)

    monkeypatch.setattr(trainer_builder, "build_sft_config", counting_config)
    monkeypatch.setattr(StepTimer, "on_train_end", on_train_end, raising=False)
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("max_steps", [4, 10])  # 20 rows in batches of 2: 4 steps stop mid-epoch, 10 end it
def test_a_run_records_the_tokens_it_trained_on_and_their_flops(
    tiny_run, tmp_path, transformers_token_count, max_steps
):
    """tokens_seen is what transformers counts too (not the batch the data loader collates ahead, nor the
    held-out split), a resumed run counts every step once, and train_flops follows ftcompare.flops."""
    from ftcompare.flops import shape_of
    from ftcompare.trainer_builder import load_model

    settings = settings_for("lora", max_steps=max_steps, save_steps=2)
    paths = run_paths(tiny_run, tmp_path)
    metrics, _ = train_run(settings, paths, "cpu", "float32", False, {"f": 1}, FakeTelemetry())
    assert metrics.tokens_seen == transformers_token_count[-1] > 0

    # FLOPs: 4·N + 6·adapter per token, plus attention's 12·layers·d·s² summed over the sequences
    # (1 layer, d = 16), where s² summed over 2·max_steps sequences lies between tokens²/sequences and tokens·16.
    base = load_model(tiny_run / "base", "float32", "eager", False)
    matmul = sum(p.numel() for p in base.parameters()) - base.get_input_embeddings().weight.numel()
    adapter = metrics.trainable_params
    assert shape_of(base).matmul_params == matmul and adapter == 512
    attention = metrics.train_flops - (4 * matmul + 6 * adapter) * metrics.tokens_seen
    squared = attention / (12 * 1 * 16)
    assert squared == int(squared)
    assert metrics.tokens_seen**2 / (2 * max_steps) <= squared <= metrics.tokens_seen * 16

    # Killed after step 4's log, before its checkpoint: steps 3 and 4 again, counted once.
    last = paths.checkpoints / f"checkpoint-{max_steps}"
    shutil.rmtree(last)
    resumed, _ = train_run(settings, paths, "cpu", "float32", False, {"f": 1}, FakeTelemetry())
    assert resumed.resumed_from_step == max_steps - 2
    assert (resumed.tokens_seen, resumed.train_flops) == (metrics.tokens_seen, metrics.train_flops)
    assert transformers_token_count[-1] == metrics.tokens_seen
