"""One fine-tuning run (LoRA or full) with TRL's SFTTrainer, as the blog ran it, and its metrics.

The config keeps the blog's TrainingArguments names (group_by_length, warmup_ratio); this module
maps them onto the current transformers/TRL API.
"""

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
import transformers
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from transformers.integrations import TensorBoardCallback
from transformers.trainer_callback import ExportableState
from trl import SFTConfig

from ftcompare.atomic import atomic_path, write_json
from ftcompare.checkpoints import checkpoint_step, prepare_checkpoint_dir
from ftcompare.data_order import SeededSFTTrainer
from ftcompare.errors import FtcompareError
from ftcompare.fast_path import (
    WithoutPaddingMask,
    resolve_bf16,
    resolve_torch_compile,
    training_collator,
    training_options,
    use_lm_head_loss,
)

log = logging.getLogger("ftcompare.training")

TEXT_COLUMN = "text"
LOG_HISTORY_COLUMNS = ["step", "epoch", "loss", "learning_rate", "grad_norm", "elapsed_s"]
_EVAL_BEFORE_FILE = "eval_before_training.json"
# The live TensorBoard log sits with the checkpoints, which survive a rerun; the output gets a copy at the end.
_TENSORBOARD_DIR = "tensorboard"


@dataclass
class RunPaths:
    train_data: Path
    eval_data: Path
    base_model: Path
    model_out: Path
    tensorboard: Path
    checkpoints: Path


def build_lora_config(lora: dict) -> LoraConfig:
    return LoraConfig(
        r=lora["r"],
        lora_alpha=lora["lora_alpha"],
        lora_dropout=lora["lora_dropout"],
        bias=lora["bias"],
        target_modules=lora.get("target_modules"),
        use_dora=lora.get("use_dora", False),
        use_rslora=lora.get("use_rslora", False),
        task_type="CAUSAL_LM",
    )


def build_sft_config(training: dict, seed: int, output_dir: Path, device: str) -> SFTConfig:
    torch_compile = resolve_torch_compile(training["torch_compile"], device)[0]
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
        bf16=resolve_bf16(training["bf16"], device),
        activation_checkpointing=training["gradient_checkpointing"],
        torch_compile=torch_compile,
        torch_compile_backend="inductor" if torch_compile else None,
        report_to=list(training["report_to"]),
        seed=seed,
        data_seed=seed,
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
        disable_tqdm=True,
        dataset_text_field=TEXT_COLUMN,
        max_length=training["max_seq_length"],
        packing=training["packing"],
        packing_strategy="bfd",  # whole sequences per bin, never cut; boundaries kept (see fast_path)
        # Held-out loss is measured on unpacked batches in every run, so runs with and without packing compare.
        eval_packing=False,
    )


def load_model(path, dtype: str, attn_implementation: str, trust_remote_code: bool):
    return AutoModelForCausalLM.from_pretrained(
        str(path),
        dtype=dtype if dtype == "auto" else getattr(torch, dtype),
        attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code,
    )


def count_parameters(model) -> tuple[int, int]:
    """(trainable, all): PEFT's own count for a PeftModel, the plain sum otherwise."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


class TokenCountingCollator:
    """Wraps the trainer's collator to count samples, all tokens and non-padding tokens."""

    def __init__(self, inner):
        self.inner = inner
        self.samples = 0
        self.tokens = 0
        self.nonpad_tokens = 0

    def __call__(self, features):
        batch = self.inner(features)
        packed = isinstance(features[0], dict) and "seq_lengths" in features[0]
        self.samples += sum(len(f["seq_lengths"]) for f in features) if packed else len(features)
        self.tokens += int(batch["input_ids"].numel())
        if "attention_mask" in batch:
            self.nonpad_tokens += int(batch["attention_mask"].sum())
        elif packed:  # packed bins: the rows' padding is what the sequences leave free
            self.nonpad_tokens += sum(sum(f["seq_lengths"]) for f in features)
        else:
            self.nonpad_tokens += int(batch["input_ids"].numel())
        return batch


def install_collator(trainer, training: dict) -> TokenCountingCollator:
    """Give the trainer the collator `training` asks for, behind a token counter, and return the counter.

    The counter reads the attention mask, so it counts before `drop_padding_mask` removes it.
    """
    counter = TokenCountingCollator(training_collator(trainer, training))
    trainer.data_collator = WithoutPaddingMask(counter) if training["drop_padding_mask"] else counter
    return counter


class ProgressRecorder(TrainerCallback, ExportableState):
    """Adds elapsed seconds to each logged row, times each step, and honours SIGTERM.

    elapsed_s counts training time across a resume: as an ExportableState, the elapsed time at
    each save goes into the checkpoint's trainer_state.json, and a resumed run continues from it.
    On SIGTERM (what SLURM sends before a kill) the trainer saves a checkpoint at the end of the
    current step and stops; the caller then exits non-zero so the job is not taken as finished.
    """

    def __init__(self, counter: TokenCountingCollator):
        self.counter = counter
        self.start = None
        self.elapsed_offset = 0.0
        self.steps = []  # (global_step, seconds since start, samples, tokens, nonpad tokens)
        self.sigterm_received = False
        self._sigterm_handler_installed = False
        self._previous_sigterm_handler = None

    def elapsed(self) -> float:
        """Seconds of training behind the current step, the segments before a resume included."""
        return self.elapsed_offset + (time.perf_counter() - self.start if self.start is not None else 0.0)

    def state(self) -> dict:
        return {"args": {}, "attributes": {"elapsed_s": round(self.elapsed(), 4)}}

    def on_train_begin(self, args, state, control, **kwargs):
        self.elapsed_offset = _elapsed_at_checkpoint(state, type(self).__name__)
        # A checkpoint from before this callback saved state has no entry, and saving would fail.
        state.stateful_callbacks.setdefault(type(self).__name__, self.state())
        self.start = time.perf_counter()
        self.steps.append(
            (state.global_step, 0.0, self.counter.samples, self.counter.tokens, self.counter.nonpad_tokens)
        )
        self._previous_sigterm_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        self._sigterm_handler_installed = True

    def _on_sigterm(self, signum, frame):
        self.sigterm_received = True

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(
            (
                state.global_step,
                time.perf_counter() - self.start,
                self.counter.samples,
                self.counter.tokens,
                self.counter.nonpad_tokens,
            )
        )
        if self.sigterm_received:
            control.should_save = True
            control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.log_history and self.start is not None:
            state.log_history[-1]["elapsed_s"] = round(self.elapsed(), 4)

    def on_train_end(self, args, state, control, **kwargs):
        self.restore_sigterm_handler()

    def restore_sigterm_handler(self) -> None:
        if self._sigterm_handler_installed:
            # None: the previous handler was not set from Python; the default is the nearest equivalent.
            signal.signal(signal.SIGTERM, self._previous_sigterm_handler or signal.SIG_DFL)
            self._sigterm_handler_installed = False


def _elapsed_at_checkpoint(state, callback_name: str) -> float:
    """The elapsed time a resumed checkpoint saved (0 on a fresh start); for a checkpoint without it,
    the last elapsed_s logged before it."""
    saved = state.stateful_callbacks.get(callback_name)
    if isinstance(saved, dict) and isinstance(saved.get("attributes", {}).get("elapsed_s"), (int, float)):
        return float(saved["attributes"]["elapsed_s"])
    logged = [row["elapsed_s"] for row in state.log_history if row.get("elapsed_s") is not None]
    return logged[-1] if logged else 0.0


def steady_throughput(steps: list[tuple]) -> dict:
    """Samples/s and tokens/s over the steps after the first few, which pay one-off costs."""
    measured = len(steps) - 1
    if measured < 1:
        return {"samples_per_s": None, "tokens_per_s": None, "nonpad_tokens_per_s": None, "warmup_steps": 0}
    warmup = min(5, measured // 5)
    first, last = steps[warmup], steps[-1]
    seconds = last[1] - first[1]
    if seconds <= 0:
        return {"samples_per_s": None, "tokens_per_s": None, "nonpad_tokens_per_s": None, "warmup_steps": warmup}
    return {
        "samples_per_s": (last[2] - first[2]) / seconds,
        "tokens_per_s": (last[3] - first[3]) / seconds,
        "nonpad_tokens_per_s": (last[4] - first[4]) / seconds,
        "warmup_steps": warmup,
    }


def loss_rows(log_history: list[dict]) -> list[dict]:
    """The training-loss rows of the trainer's log history, one per logged step, in step order."""
    rows = {}
    for entry in log_history:
        if "loss" not in entry or "step" not in entry:
            continue
        rows[entry["step"]] = {
            "step": entry["step"],
            "epoch": entry.get("epoch"),
            "loss": entry["loss"],
            "learning_rate": entry.get("learning_rate"),
            "grad_norm": entry.get("grad_norm"),
            "elapsed_s": entry.get("elapsed_s"),
        }
    return [rows[step] for step in sorted(rows)]


def train_run(
    settings: dict, paths: RunPaths, device: str, dtype: str, trust_remote_code: bool, fingerprint: dict, sampler
) -> tuple[dict, list[dict]]:
    """Fine-tune one run; returns (metrics, log-history rows). Saves the model to paths.model_out."""
    run, method, training = settings["run"], settings["method"], settings["training"]
    transformers.set_seed(settings["seed"])
    compiled, why = resolve_torch_compile(training["torch_compile"], device)
    log.info("run %s: torch.compile %s (%s)", run, "on" if compiled else "off", why)
    sampler.set_phase("load")
    tokenizer = AutoTokenizer.from_pretrained(str(paths.base_model), trust_remote_code=trust_remote_code)
    model = load_model(paths.base_model, dtype, training["attn_implementation"], trust_remote_code)
    if method == "lora":
        model = get_peft_model(model, build_lora_config(settings["lora"]))
    trainable, total = count_parameters(model)
    log.info(
        "run %s (%s): trainable params: %s || all params: %s || trainable%%: %.4f",
        run,
        method,
        f"{trainable:,}",
        f"{total:,}",
        100 * trainable / total,
    )

    train_data = datasets.Dataset.from_parquet(str(paths.train_data))
    eval_data = datasets.Dataset.from_parquet(str(paths.eval_data))
    resume_from = prepare_checkpoint_dir(paths.checkpoints, fingerprint)
    tensorboard_live = paths.checkpoints / _TENSORBOARD_DIR
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(tensorboard_live)
    args = build_sft_config(training, settings["seed"], paths.checkpoints, device)
    trainer = SeededSFTTrainer(
        model=model, args=args, train_dataset=train_data, eval_dataset=eval_data, processing_class=tokenizer
    )
    if resume_from is not None:
        purge_tensorboard_after(trainer, tensorboard_live, checkpoint_step(resume_from))
    use_lm_head_loss(trainer, training)
    counter = install_collator(trainer, training)
    recorder = ProgressRecorder(counter)
    trainer.add_callback(recorder)

    with _out_of_memory_explained(run, method, device):
        eval_before = _eval_loss_before_training(trainer, paths.checkpoints, resume_from)
        if resume_from is not None:
            log.info("resuming run %s from %s (step %d)", run, resume_from, checkpoint_step(resume_from))

        sampler.set_phase("train")
        if hasattr(sampler, "reset_peaks"):
            sampler.reset_peaks()
        started = time.time()
        try:
            output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        finally:
            recorder.restore_sigterm_handler()
        if recorder.sigterm_received:
            raise FtcompareError(
                f"run {run}: stopped by SIGTERM at step {trainer.state.global_step}; a checkpoint "
                f"was saved in {paths.checkpoints}. Rerun to resume."
            )
        finished = time.time()

        sampler.set_phase("eval")
        eval_after = trainer.evaluate()["eval_loss"]

    sampler.set_phase("save")
    with atomic_path(paths.model_out, is_dir=True) as tmp:
        trainer.model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    close_tensorboard(trainer)
    with atomic_path(paths.tensorboard, is_dir=True) as tmp:
        if tensorboard_live.is_dir():
            shutil.copytree(tensorboard_live, tmp, dirs_exist_ok=True)

    rows = loss_rows(trainer.state.log_history)
    losses = [row["loss"] for row in rows]
    if not losses:
        raise FtcompareError(
            f"run {run}: training logged no loss (0 steps?); check num_train_epochs / max_steps "
            "against the size of the training split"
        )
    steady = steady_throughput(recorder.steps)
    metrics = {
        "run": run,
        "method": method,
        "trainable_params": int(trainable),
        "total_params": int(total),
        "trainable_pct": 100.0 * trainable / total,
        "train_steps": int(trainer.state.global_step),
        # A resumed run's runtime adds the training time its checkpoint was saved at; steps lost to
        # the interruption are not counted. Rates are those of the last segment.
        "train_runtime_s": recorder.elapsed_offset + output.metrics["train_runtime"],
        "train_samples_per_s": output.metrics["train_samples_per_second"],
        "train_steps_per_s": output.metrics["train_steps_per_second"],
        "steady_samples_per_s": steady["samples_per_s"],
        "train_tokens_per_s": steady["tokens_per_s"],
        "train_nonpad_tokens_per_s": steady["nonpad_tokens_per_s"],
        "throughput_warmup_steps_excluded": steady["warmup_steps"],
        "final_train_loss": losses[-1],
        "mean_train_loss": statistics.fmean(losses),
        "eval_loss": eval_after,
        "eval_perplexity": _perplexity(eval_after),
        "eval_loss_before_training": eval_before,
        "eval_perplexity_before_training": _perplexity(eval_before),
        "learning_rate": training["learning_rate"],
        "device": "cuda:0" if device == "cuda" else "cpu",
        "dtype": dtype,
        "options": training_options(training, device),
        "lora": settings.get("lora"),
        "resumed_from_step": checkpoint_step(resume_from) if resume_from else None,
        "started_at": _iso(started),
        "finished_at": _iso(finished),
    }
    return metrics, rows


def _tensorboard_callback(trainer) -> TensorBoardCallback | None:
    return next(
        (callback for callback in trainer.callback_handler.callbacks if isinstance(callback, TensorBoardCallback)), None
    )


def purge_tensorboard_after(trainer, log_dir: Path, step: int) -> None:
    """Open a resumed run's TensorBoard log so that readers drop what the interrupted job logged after `step`.

    The steps between the checkpoint and the interruption are trained and logged again; with
    `purge_step`, TensorBoard keeps only the new values, and the curve has every step once.
    """
    callback = _tensorboard_callback(trainer)
    if callback is not None:
        from torch.utils.tensorboard import SummaryWriter

        callback.tb_writer = SummaryWriter(log_dir=str(log_dir), purge_step=step + 1)


def close_tensorboard(trainer) -> None:
    """Flush and close the TensorBoard log (the evaluation after training reopens one the trainer leaves open)."""
    callback = _tensorboard_callback(trainer)
    if callback is not None and callback.tb_writer is not None:
        callback.tb_writer.close()
        callback.tb_writer = None


def _eval_loss_before_training(trainer, checkpoint_dir: Path, resume_from) -> float:
    """The base model's loss on the held-out split, measured once per run and kept for resumes."""
    stored = checkpoint_dir / _EVAL_BEFORE_FILE
    if resume_from is not None and stored.is_file():
        return json.loads(stored.read_text())["eval_loss"]
    loss = trainer.evaluate()["eval_loss"]
    write_json(stored, {"eval_loss": loss})
    return loss


def _perplexity(loss: float | None) -> float | None:
    if loss is None:
        return None
    return math.exp(loss) if loss < 50 else float("inf")


@contextlib.contextmanager
def _out_of_memory_explained(run: str, method: str, device: str):
    """Turn torch's out-of-memory error into a message naming the run, the peak and what to try."""
    try:
        yield
    except torch.OutOfMemoryError as error:
        smaller_model = "a smaller lora.r" if method == "lora" else "the lora method"
        raise FtcompareError(
            f"run {run}: out of GPU memory ({_memory_peak_text(device)}). Try a smaller "
            "per_device_train_batch_size with more gradient_accumulation_steps, "
            f"training.gradient_checkpointing: true, bf16, or {smaller_model}."
        ) from error


def _memory_peak_text(device: str) -> str:
    if device != "cuda" or not torch.cuda.is_available():
        return "peak unknown"
    mib = 2**20
    total = torch.cuda.get_device_properties(0).total_memory / mib
    return (
        f"peak {torch.cuda.max_memory_allocated() / mib:,.0f} MiB allocated and "
        f"{torch.cuda.max_memory_reserved() / mib:,.0f} MiB reserved by torch, of {total:,.0f} MiB on "
        f"{torch.cuda.get_device_name(0)}"
    )


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
