"""The files the report reads, loaded into dataclasses: one RunResult per run, one
ModelGenerations per model, plus the data card, the base model card and the config."""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ftcompare.errors import FtcompareError
from ftcompare.report.numbers import as_number
from ftcompare.report.telemetry import Telemetry, normalise_samples

LOG_HISTORY_COLUMNS = ["step", "epoch", "loss", "learning_rate", "grad_norm", "elapsed_s"]


@dataclass(frozen=True)
class MemoryFigure:
    value: float | None
    source: str | None


@dataclass(frozen=True)
class Metrics:
    """metrics.json of one training run; any figure the trainer could not measure is None."""

    run: str
    method: str | None
    trainable_params: int | None = None
    total_params: int | None = None
    trainable_pct: float | None = None
    train_steps: int | None = None
    train_runtime_s: float | None = None
    train_samples_per_s: float | None = None
    train_tokens_per_s: float | None = None
    train_nonpad_tokens_per_s: float | None = None
    throughput_warmup_steps_excluded: int | None = None
    final_train_loss: float | None = None
    mean_train_loss: float | None = None
    eval_loss: float | None = None
    eval_perplexity: float | None = None
    eval_loss_before_training: float | None = None
    peak_memory_mb: float | None = None
    peak_memory_source: str | None = None
    memory: dict[str, MemoryFigure] = field(default_factory=dict)
    energy_j: float | None = None
    energy_source: str | None = None
    device: str | None = None
    device_name: str | None = None
    options: dict = field(default_factory=dict)
    learning_rate: float | None = None
    resumed_from_step: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    # Optional: what the training job ran with, where its environment differs from the report's.
    torch_build: str | None = None
    versions: dict[str, str] = field(default_factory=dict)

    def memory_value(self, name: str) -> MemoryFigure | None:
        figure = self.memory.get(name)
        return figure if figure is not None and figure.value is not None else None


@dataclass(frozen=True)
class RunResult:
    name: str
    metrics: Metrics
    log_history: pd.DataFrame
    telemetry: Telemetry

    @property
    def method(self) -> str | None:
        return self.metrics.method


@dataclass(frozen=True)
class Generation:
    prompt_id: str
    prompt: str
    formatted_prompt: str
    output: str
    new_tokens: int | None
    seconds: float | None


@dataclass(frozen=True)
class ModelGenerations:
    model: str
    generations: list[Generation]
    telemetry: Telemetry


@dataclass(frozen=True)
class ReportInputs:
    title: str
    runs: list[RunResult]
    generations: list[ModelGenerations]
    data_card: dict
    base_card: dict
    config: dict
    config_hash: str
    reference: dict
    template: Path
    style: Path


@dataclass(frozen=True)
class ReportInputPaths:
    """Where each input lies; lists are in run order (generations: base first)."""

    metrics: list[Path]
    log_history: list[Path]
    train_telemetry: list[Path]
    generations: list[Path]
    data_card: Path
    base_card: Path
    template: Path
    style: Path


def load_report_inputs(
    paths: ReportInputPaths, runs: list[str], config: dict, config_hash: str, reference: dict | None, title: str
) -> ReportInputs:
    counts = {
        "metrics": len(paths.metrics),
        "log_history": len(paths.log_history),
        "train_telemetry": len(paths.train_telemetry),
    }
    wrong = {name: n for name, n in counts.items() if n != len(runs)}
    if wrong:
        raise FtcompareError(
            f"report inputs do not match the {len(runs)} runs {runs}: "
            + ", ".join(f"{name} has {n} files" for name, n in wrong.items())
        )
    run_results = [
        load_run(name, Path(m), Path(h), Path(t))
        for name, m, h, t in zip(runs, paths.metrics, paths.log_history, paths.train_telemetry)
    ]
    return ReportInputs(
        title=title,
        runs=run_results,
        generations=[load_generations(Path(p)) for p in paths.generations],
        data_card=read_json_object(Path(paths.data_card)),
        base_card=read_json_object(Path(paths.base_card)),
        config=config,
        config_hash=config_hash,
        reference=reference or {},
        template=Path(paths.template),
        style=Path(paths.style),
    )


def load_run(name: str, metrics_path: Path, log_history_path: Path, telemetry_path: Path) -> RunResult:
    metrics = parse_metrics(read_json_object(metrics_path), fallback_run=name)
    if metrics.run != name:
        raise FtcompareError(
            f"{metrics_path}: is for run {metrics.run!r}, expected {name!r} "
            f"(metrics must be listed in the order of params.runs)"
        )
    return RunResult(
        name=name,
        metrics=metrics,
        log_history=read_log_history(log_history_path),
        telemetry=load_telemetry(telemetry_path),
    )


def parse_metrics(raw: dict, fallback_run: str) -> Metrics:
    def number(key):
        return as_number(raw.get(key))

    def integer(key):
        value = number(key)
        return int(value) if value is not None else None

    def text(key):
        value = raw.get(key)
        return str(value) if value not in (None, "") else None

    memory = {}
    for name, figure in (raw.get("memory") or {}).items():
        if isinstance(figure, dict):
            memory[str(name)] = MemoryFigure(as_number(figure.get("value")), figure.get("source"))
        else:
            memory[str(name)] = MemoryFigure(as_number(figure), None)
    trainable, total = integer("trainable_params"), integer("total_params")
    trainable_pct = number("trainable_pct")
    if trainable_pct is None and trainable is not None and total:
        trainable_pct = 100.0 * trainable / total
    eval_loss, eval_perplexity = number("eval_loss"), number("eval_perplexity")
    if eval_perplexity is None and eval_loss is not None and eval_loss < 700:
        eval_perplexity = math.exp(eval_loss)
    return Metrics(
        run=text("run") or fallback_run,
        method=text("method"),
        trainable_params=trainable,
        total_params=total,
        trainable_pct=trainable_pct,
        train_steps=integer("train_steps"),
        train_runtime_s=number("train_runtime_s"),
        train_samples_per_s=number("train_samples_per_s"),
        train_tokens_per_s=number("train_tokens_per_s"),
        train_nonpad_tokens_per_s=number("train_nonpad_tokens_per_s"),
        throughput_warmup_steps_excluded=integer("throughput_warmup_steps_excluded"),
        final_train_loss=number("final_train_loss"),
        mean_train_loss=number("mean_train_loss"),
        eval_loss=eval_loss,
        eval_perplexity=eval_perplexity,
        eval_loss_before_training=number("eval_loss_before_training"),
        peak_memory_mb=number("peak_memory_mb"),
        peak_memory_source=text("peak_memory_source"),
        memory=memory,
        energy_j=number("energy_j"),
        energy_source=text("energy_source"),
        device=text("device"),
        device_name=text("device_name"),
        options=raw.get("options") if isinstance(raw.get("options"), dict) else {},
        learning_rate=number("learning_rate"),
        resumed_from_step=integer("resumed_from_step"),
        started_at=text("started_at"),
        finished_at=text("finished_at"),
        torch_build=text("torch_build"),
        versions={str(k): str(v) for k, v in (raw.get("versions") or {}).items()}
        if isinstance(raw.get("versions"), dict)
        else {},
    )


def read_log_history(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame()
    except (OSError, pd.errors.ParserError) as error:
        raise FtcompareError(f"{path}: cannot read the training log history: {error}") from error
    for column in LOG_HISTORY_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce") if column in frame else float("nan")
    return frame.dropna(subset=["step"]).sort_values("step").reset_index(drop=True)


def load_telemetry(summary_path: Path) -> Telemetry:
    """telemetry.json and the CSV beside it ({stem}.csv); either may be missing or sparse."""
    summary = read_json_object(summary_path) if summary_path.is_file() else {}
    samples_path = summary_path.with_suffix(".csv")
    samples = pd.DataFrame()
    if samples_path.is_file():
        try:
            samples = pd.read_csv(samples_path)
        except pd.errors.EmptyDataError:
            pass
        except (OSError, pd.errors.ParserError) as error:
            raise FtcompareError(f"{samples_path}: cannot read telemetry samples: {error}") from error
    return Telemetry(summary=summary, samples=normalise_samples(samples))


def load_generations(path: Path) -> ModelGenerations:
    name = path.name.removesuffix(".jsonl")
    generations, model_fields = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise FtcompareError(f"{path}: cannot read generations: {error}") from error
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise FtcompareError(f"{path}, line {number}: not valid JSON ({error.msg})") from error
        if not isinstance(record, dict):
            raise FtcompareError(f"{path}, line {number}: expected a JSON object per line")
        model_fields.append(record.get("model"))
        new_tokens = as_number(record.get("new_tokens"))
        generations.append(
            Generation(
                prompt_id=str(record.get("prompt_id", len(generations))),
                prompt=str(record.get("prompt") or ""),
                formatted_prompt=str(record.get("formatted_prompt") or ""),
                output=str(record.get("output") or ""),
                new_tokens=int(new_tokens) if new_tokens is not None else None,
                seconds=as_number(record.get("seconds")),
            )
        )
    model = str(model_fields[0]) if model_fields and model_fields[0] else name
    telemetry = load_telemetry(path.with_name(f"{name}.telemetry.json"))
    return ModelGenerations(model=model, generations=generations, telemetry=telemetry)


def read_json_object(path: Path) -> dict:
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise FtcompareError(f"{path}: cannot read: {error.strerror or error}") from error
    except json.JSONDecodeError as error:
        raise FtcompareError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from error
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FtcompareError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value
