"""The files the report reads, loaded into dataclasses: one RunResult per run, one
ModelGenerations per model, plus the data card, the base model card, the memory plan and the config."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ftcompare.errors import FtcompareError
from ftcompare.learning import read_evaluation
from ftcompare.metrics import LOG_HISTORY_COLUMNS, RunMetrics, read_metrics
from ftcompare.report.comparison import read_summary
from ftcompare.report.lm_eval import ModelTaskResults, load_lm_eval_results
from ftcompare.report.numbers import as_number
from ftcompare.report.telemetry import Telemetry, normalise_samples
from ftcompare.strict_json import loads, read_json_object

if TYPE_CHECKING:
    from ftcompare.report.weights import WeightAnalysis


@dataclass(frozen=True)
class RunResult:
    name: str
    metrics: RunMetrics
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
    picked_run: str | None = None  # a best-<method> model: the run it generated from (its records' best_of)

    @property
    def label(self) -> str:
        return f"{self.model} ({self.picked_run})" if self.picked_run else self.model


@dataclass(frozen=True)
class ReportInputs:
    title: str
    runs: list[RunResult]
    generations: list[ModelGenerations]
    data_card: dict
    base_card: dict
    plan: dict  # results/plan/plan.json
    config: dict
    config_hash: str
    reference: dict
    template: Path
    style: Path
    comparison: dict | None = None  # results/compare/summary.json (ftcompare.report.comparison reads it)
    comparison_figures: Path | None = None  # results/compare/figures
    evaluations: list[dict] = field(default_factory=list)  # results/evaluate/<model>.json, the base first
    weights: list["WeightAnalysis"] = field(default_factory=list)  # results/analysis/<run>.json, run order
    lm_eval: list[ModelTaskResults] = field(default_factory=list)  # empty: no lm_eval.tasks


@dataclass(frozen=True)
class ReportInputPaths:
    """Where each input lies; lists are in run order (generations: base first)."""

    metrics: list[Path]
    log_history: list[Path]
    train_telemetry: list[Path]
    generations: list[Path]
    data_card: Path
    base_card: Path
    plan: Path
    template: Path
    style: Path
    compare_summary: Path | None = None
    compare_figures: Path | None = None
    evaluations: list[Path] = field(default_factory=list)
    weights: list[Path] = field(default_factory=list)  # none when weight_analysis.enabled is false
    lm_eval: list[Path] = field(default_factory=list)  # results/lm_eval/<model>.json, base first


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
    # Imported here: the weights module draws figures, and the figure modules import this one.
    from ftcompare.report.weights import load_weight_analysis

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
        plan=read_json_object(Path(paths.plan)),
        config=config,
        config_hash=config_hash,
        reference=reference or {},
        template=Path(paths.template),
        style=Path(paths.style),
        comparison=read_summary(Path(paths.compare_summary)) if paths.compare_summary else None,
        comparison_figures=Path(paths.compare_figures) if paths.compare_figures else None,
        evaluations=[read_evaluation(Path(p)) for p in paths.evaluations],
        weights=[load_weight_analysis(Path(p)) for p in paths.weights],
        lm_eval=load_lm_eval_results(paths.lm_eval),
    )


def load_run(name: str, metrics_path: Path, log_history_path: Path, telemetry_path: Path) -> RunResult:
    return RunResult(
        name=name,
        metrics=read_metrics(metrics_path, name),
        log_history=read_log_history(log_history_path),
        telemetry=load_telemetry(telemetry_path),
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
    generations, model_fields, picked_run = [], [], None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise FtcompareError(f"{path}: cannot read generations: {error}") from error
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = loads(line)
        except ValueError as error:
            raise FtcompareError(f"{path}, line {number}: not valid JSON ({getattr(error, 'msg', error)})") from error
        if not isinstance(record, dict):
            raise FtcompareError(f"{path}, line {number}: expected a JSON object per line")
        model_fields.append(record.get("model"))
        best_of = record.get("best_of")
        if isinstance(best_of, dict) and best_of.get("run"):
            picked_run = str(best_of["run"])
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
    return ModelGenerations(model=model, generations=generations, telemetry=telemetry, picked_run=picked_run)
