"""The record of what one training run measured: metrics.json, written by the train job, read by the
report and the bench. Torch-free, so the report's environment can read it.

A figure that could not be measured (no GPU, no energy counter, a loss that overflowed) is None, and
null in the JSON.
"""

import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

from ftcompare.atomic import write_json
from ftcompare.errors import FtcompareError
from ftcompare.report.numbers import as_number
from ftcompare.strict_json import read_json_object

# log_history.csv beside metrics.json: one row per logged training step.
LOG_HISTORY_COLUMNS = ["step", "epoch", "loss", "learning_rate", "grad_norm", "elapsed_s"]


def perplexity(loss: float | None) -> float | None:
    """exp(loss) in nats, or None where the loss is missing or exp overflows a float."""
    if as_number(loss) is None:
        return None
    try:
        return math.exp(loss)
    except OverflowError:
        return None


@dataclass(frozen=True)
class MemoryFigure:
    value: float | None
    unit: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class RunMetrics:
    """One run's metrics.json; the fields are in the file's order. Derived figures (trainable_pct,
    the perplexities) are properties, written beside the figure they come from."""

    run: str
    method: str | None = None
    trainable_params: int | None = None
    total_params: int | None = None
    train_steps: int | None = None
    # A resumed run's runtime adds the training time its checkpoint was saved at; rates are the last segment's.
    train_runtime_s: float | None = None
    train_samples_per_s: float | None = None
    train_steps_per_s: float | None = None
    # Steady rates: the first `throughput_skipped_steps` steps pay one-off costs and are left out.
    steady_samples_per_s: float | None = None
    train_tokens_per_s: float | None = None
    train_nonpad_tokens_per_s: float | None = None
    throughput_skipped_steps: int | None = None
    # Non-padding tokens trained on (all processes, all steps) and their model FLOPs (ftcompare.flops).
    tokens_seen: int | None = None
    train_flops: float | None = None
    final_train_loss: float | None = None
    mean_train_loss: float | None = None
    eval_loss: float | None = None
    eval_loss_before_training: float | None = None
    learning_rate: float | None = None
    seed: int | None = None  # the run's seed: model init, adapter init, dropout, data order
    device: str | None = None
    # The job's GPUs as its CUDA_/HIP_VISIBLE_DEVICES names them ([] without one), and how it got them.
    devices: list[str] = field(default_factory=list)
    device_assignment: str | None = None
    dtype: str | None = None
    # How the run used its devices (training.strategy; training.devices as device_count; the processes that
    # trained) and the sequences per optimizer step over all of them: per-device batch x processes x accumulation.
    strategy: str | None = None
    device_count: int | None = None
    processes: int | None = None
    global_batch_size: int | None = None
    options: dict = field(default_factory=dict)
    lora: dict | None = None
    quantization: dict | None = None
    resumed_from_step: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    # From the job's telemetry and environment (scripts/train.py).
    device_name: str | None = None
    peak_memory_mb: float | None = None
    peak_memory_source: str | None = None
    memory: dict[str, MemoryFigure] = field(default_factory=dict)
    energy_j: float | None = None
    energy_source: str | None = None
    telemetry_backend: str | None = None
    torch_build: str | None = None
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def trainable_pct(self) -> float | None:
        if self.trainable_params is None or not self.total_params:
            return None
        return 100.0 * self.trainable_params / self.total_params

    @property
    def eval_perplexity(self) -> float | None:
        return perplexity(self.eval_loss)

    @property
    def eval_perplexity_before_training(self) -> float | None:
        return perplexity(self.eval_loss_before_training)

    def memory_value(self, name: str) -> MemoryFigure | None:
        figure = self.memory.get(name)
        return figure if figure is not None and figure.value is not None else None

    def to_json(self) -> dict:
        record = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.name == "memory":
                value = {name: vars(figure) for name, figure in value.items()}
            record[spec.name] = value
            for derived in _DERIVED_AFTER.get(spec.name, ()):
                record[derived] = getattr(self, derived)
        return record

    @classmethod
    def from_json(cls, raw: dict, fallback_run: str) -> "RunMetrics":
        """A record from a parsed metrics.json; a value of the wrong type reads as missing."""
        values = {}
        for spec in fields(cls):
            value = _typed(raw.get(spec.name), spec.type)
            if value is not None:
                values[spec.name] = value
        values["memory"] = {
            str(name): MemoryFigure(as_number(figure.get("value")), figure.get("unit"), figure.get("source"))
            for name, figure in (raw.get("memory") or {}).items()
            if isinstance(figure, dict)
        }
        values["versions"] = {str(k): str(v) for k, v in values.get("versions", {}).items()}
        values.setdefault("run", fallback_run)
        return cls(**values)


_DERIVED_AFTER = {
    "total_params": ("trainable_pct",),
    "eval_loss": ("eval_perplexity",),
    "eval_loss_before_training": ("eval_perplexity_before_training",),
}


def _typed(value, annotation):
    kinds = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    kind = typing.get_origin(kinds[0]) or kinds[0]
    if kind is int:
        number = as_number(value)
        return int(number) if number is not None else None
    if kind is float:
        return as_number(value)
    if kind is str:
        return str(value) if value not in (None, "") else None
    return value if isinstance(value, kind) else None


def write_metrics(path, metrics: RunMetrics) -> None:
    write_json(path, metrics.to_json())


def read_metrics(path: Path, run: str) -> RunMetrics:
    """metrics.json of run `run`; refuses a file that belongs to another run."""
    metrics = RunMetrics.from_json(read_json_object(path), fallback_run=run)
    if metrics.run != run:
        raise FtcompareError(f"{path}: is for run {metrics.run!r}, expected {run!r}")
    return metrics
