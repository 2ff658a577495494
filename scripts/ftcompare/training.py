"""One fine-tuning run (LoRA, QLoRA or full) with TRL's SFTTrainer, as the blog ran it, and its metrics."""

import contextlib
import errno
import json
import logging
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from transformers.integrations import TensorBoardCallback

from ftcompare.atomic import atomic_path, write_json
from ftcompare.callbacks import StopOnSigterm, steady_throughput_of_all_ranks
from ftcompare.checkpoints import checkpoint_step, checkpoints_in, folder_bytes, is_complete, prepare_checkpoint_dir
from ftcompare.errors import FtcompareError
from ftcompare.flops import ModelShape, shape_of, training_flops_of_counts
from ftcompare.metrics import RunMetrics
from ftcompare.parallel import full_state_dict
from ftcompare.plan_check import available_memory, check_plan
from ftcompare.quantization import resolved_quantization
from ftcompare.speed_options import training_options
from ftcompare.trainer_builder import BuiltTrainer, TrainerSpec, build_trainer

log = logging.getLogger("ftcompare.training")

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


def train_run(
    settings: dict,
    paths: RunPaths,
    device: str,
    dtype: str,
    trust_remote_code: bool,
    fingerprint: dict | None,
    sampler,
    resume_from: Path | None = None,
    plan: dict | None = None,
) -> tuple[RunMetrics, list[dict]]:
    """Fine-tune one run; returns (metrics, log-history rows). Saves the model to paths.model_out.

    Under several processes every rank runs this and rank 0 alone writes files; the launcher has prepared
    the checkpoint folder once for all of them (`fingerprint` None) and passes `resume_from`.
    `plan` (ftcompare.plan.plan_document with this run) is checked first: a run that cannot fit the
    job's device stops here, before the model loads (the launcher checks it before starting the ranks).
    """
    run, method = settings["run"], settings["method"]
    if plan is not None:
        log.info("%s", check_plan(plan, settings, available_memory(device, plan)))
    sampler.set_phase("load")
    spec = TrainerSpec(
        base_model=paths.base_model,
        method=method,
        training=settings["training"],
        lora=settings.get("lora"),
        seed=settings["seed"],
        device=device,
        dtype=dtype,
        output_dir=paths.checkpoints,
        trust_remote_code=trust_remote_code,
        tensorboard_dir=paths.checkpoints / _TENSORBOARD_DIR,
        quantization=settings.get("quantization"),
    )
    built = build_trainer(
        spec,
        datasets.Dataset.from_parquet(str(paths.train_data)),
        datasets.Dataset.from_parquet(str(paths.eval_data)),
    )
    _log_setup(run, method, built)
    shape = shape_of(built.trainer.model)  # before training: FSDP shards the weights as it starts
    if fingerprint is not None:
        resume_from = prepare_checkpoint_dir(paths.checkpoints, fingerprint)
    writer = built.trainer.is_world_process_zero()
    if resume_from is not None and writer:
        purge_tensorboard_after(built.trainer, spec.tensorboard_dir, checkpoint_step(resume_from))

    with _out_of_memory_explained(run, method, device):
        eval_before = _eval_loss_before_training(built.trainer, paths.checkpoints, resume_from)
        session = _train(run, built, resume_from, sampler, paths.checkpoints)
        sampler.set_phase("eval")
        eval_after = built.trainer.evaluate()["eval_loss"]

    sampler.set_phase("save")
    _save_model(built, paths.model_out)
    if writer:
        _save_tensorboard(built.trainer, spec.tensorboard_dir, paths.tensorboard)
    rows = loss_rows(built.trainer.state.log_history)
    if not rows:
        raise FtcompareError(
            f"run {run}: training logged no loss (0 steps?); check num_train_epochs / max_steps "
            "against the size of the training split"
        )
    return _run_metrics(spec, run, built, session, rows, eval_before, eval_after, shape), rows


@dataclass(frozen=True)
class TrainingSession:
    """What trainer.train() reported, and when and from where it ran."""

    output: object  # transformers' TrainOutput
    resumed_from: Path | None
    started: float
    finished: float


def _train(run: str, built: BuiltTrainer, resume_from: Path | None, sampler, checkpoints: Path) -> TrainingSession:
    """trainer.train(), resumed from `resume_from` if given; a SIGTERM saves a checkpoint and fails the job."""
    if resume_from is not None:
        log.info("resuming run %s from %s (step %d)", run, resume_from, checkpoint_step(resume_from))
    stop = StopOnSigterm()
    built.trainer.add_callback(stop)
    sampler.set_phase("train")
    sampler.reset_peaks()
    started = time.time()
    try:
        output = built.trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise FtcompareError(_disk_full_message(run, checkpoints, error)) from error
        raise
    finally:
        stop.restore_handler()
    if stop.received:
        raise FtcompareError(
            f"run {run}: stopped by SIGTERM at step {built.trainer.state.global_step}; a checkpoint "
            f"was saved in {checkpoints}. Rerun to resume."
        )
    return TrainingSession(output, resume_from, started, time.time())


def _disk_full_message(run: str, checkpoints: Path, error: OSError) -> str:
    """Remove the checkpoint the full disk cut off (freeing its space) and say what is left and what is needed."""
    saved = checkpoints_in(checkpoints)
    cut_off = [checkpoint for checkpoint in saved if not is_complete(checkpoint)]
    for checkpoint in cut_off:
        shutil.rmtree(checkpoint, ignore_errors=True)
    complete = [checkpoint for checkpoint in saved if checkpoint not in cut_off]
    where = f"{cut_off[0]}" if cut_off else str(error.filename or checkpoints)
    if complete:
        kept = (
            f"the previous checkpoint {complete[0]} is intact ({folder_bytes(complete[0]) / 1e9:.2f} GB; the next "
            f"one needs as much again) and a rerun resumes from it"
        )
    else:
        kept = "no complete checkpoint was saved before, so a rerun starts over"
    return (
        f"run {run}: the disk is full (ENOSPC) while saving a checkpoint to {where}; {kept}. Free space where "
        f"{checkpoints} lies, or lower training.save_total_limit."
    )


def _run_metrics(
    spec: TrainerSpec,
    run: str,
    built: BuiltTrainer,
    session: TrainingSession,
    rows: list[dict],
    eval_before: float,
    eval_after: float,
    shape: ModelShape,
) -> RunMetrics:
    losses = [row["loss"] for row in rows]
    args = built.trainer.args
    steady = steady_throughput_of_all_ranks(built.timer.steps, args.device)
    trained = session.output.metrics
    return RunMetrics(
        run=run,
        method=spec.method,
        trainable_params=int(built.parameters.trainable),
        total_params=int(built.parameters.total),
        train_steps=int(built.trainer.state.global_step),
        train_runtime_s=built.timer.elapsed_offset + trained["train_runtime"],
        train_samples_per_s=trained["train_samples_per_second"],
        train_steps_per_s=trained["train_steps_per_second"],
        steady_samples_per_s=steady["samples_per_s"],
        train_tokens_per_s=steady["tokens_per_s"],
        train_nonpad_tokens_per_s=steady["nonpad_tokens_per_s"],
        throughput_skipped_steps=steady["skipped_steps"],
        tokens_seen=built.timer.tokens_seen,
        train_flops=training_flops_of_counts(
            shape, built.timer.tokens_seen, built.timer.squared_lengths_seen, spec.method
        ),
        final_train_loss=losses[-1],
        mean_train_loss=statistics.fmean(losses),
        eval_loss=eval_after,
        eval_loss_before_training=eval_before,
        learning_rate=spec.training["learning_rate"],
        seed=spec.seed,
        device="cuda:0" if spec.device == "cuda" else "cpu",
        dtype=spec.dtype,
        strategy=spec.training["strategy"],
        device_count=spec.training["devices"],
        processes=args.world_size,
        global_batch_size=args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps,
        options=training_options(spec.training, built.speed),
        lora=spec.lora,
        quantization=resolved_quantization(spec.quantization, spec.device) if spec.method == "qlora" else None,
        resumed_from_step=checkpoint_step(session.resumed_from) if session.resumed_from else None,
        started_at=_iso(session.started),
        finished_at=_iso(session.finished),
    )


def _log_setup(run: str, method: str, built: BuiltTrainer) -> None:
    speed, parameters = built.speed, built.parameters
    log.info("run %s: torch.compile %s (%s)", run, "on" if speed.torch_compile else "off", speed.torch_compile_reason)
    log.info(
        "run %s (%s): trainable params: %s || all params: %s || trainable%%: %.4f",
        run,
        method,
        f"{parameters.trainable:,}",
        f"{parameters.total:,}",
        parameters.trainable_pct,
    )


def _save_model(built: BuiltTrainer, model_out: Path) -> None:
    # Under FSDP each rank holds a shard of the weights: gathering them takes every rank.
    state_dict = full_state_dict(built.trainer.model) if built.trainer.is_fsdp_enabled else None
    if not built.trainer.is_world_process_zero():
        return
    with atomic_path(model_out, is_dir=True) as tmp:
        built.trainer.model.save_pretrained(str(tmp), state_dict=state_dict)
        built.tokenizer.save_pretrained(str(tmp))


def _save_tensorboard(trainer, live: Path, output: Path) -> None:
    close_tensorboard(trainer)
    with atomic_path(output, is_dir=True) as tmp:
        if live.is_dir():
            shutil.copytree(live, tmp, dirs_exist_ok=True)


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


def _tensorboard_callback(trainer) -> TensorBoardCallback | None:
    return next(
        (callback for callback in trainer.callback_handler.callbacks if isinstance(callback, TensorBoardCallback)),
        None,
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
    _let_training_wrap_the_model(trainer)
    if trainer.is_world_process_zero():
        write_json(stored, {"eval_loss": loss})
    return loss


def _let_training_wrap_the_model(trainer) -> None:
    """evaluate() marks the model as prepared by accelerate (1.15), which then leaves it out of
    DistributedDataParallel when training starts: each process would train alone, its gradients never averaged."""
    if trainer.args.world_size > 1 and not trainer.is_fsdp_enabled:
        trainer.model._is_accelerate_prepared = False


# What shrinks the trained model's memory, by method (out-of-memory advice).
_SMALLER_MODEL = {"full": "the lora or qlora method", "lora": "a smaller lora.r or the qlora method"}


@contextlib.contextmanager
def _out_of_memory_explained(run: str, method: str, device: str):
    """Turn torch's out-of-memory error into a message naming the run, the peak and what to try."""
    try:
        yield
    except torch.OutOfMemoryError as error:
        smaller_model = _SMALLER_MODEL.get(method, "a smaller lora.r")
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
