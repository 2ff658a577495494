"""The report's task benchmarks (lm-evaluation-harness): a row per model, each requested task's metrics
with their standard errors beside the model's method, and a visible note when a row limit was set."""

from dataclasses import dataclass
from pathlib import Path

from ftcompare.errors import FtcompareError
from ftcompare.lm_eval_stage import LIMIT_WARNING
from ftcompare.report.numbers import as_number
from ftcompare.report.table import Cell, Column, Table
from ftcompare.strict_json import read_json_object

# The second sentence of lm-eval's warning (the first names its --limit flag, which LaTeX would set as "–limit").
REAL_METRICS = LIMIT_WARNING.split(". ", 1)[1]


@dataclass(frozen=True)
class ModelTaskResults:
    """One model's results/lm_eval/<model>.json."""

    model: str
    method: str
    requested_tasks: list[str]
    tasks: dict  # task name -> {"metrics": {name: {"value", "stderr"}}, "n_samples", ...}
    limit: int | None
    num_fewshot: int | None
    lm_eval_version: str | None
    best_run: str | None = None  # a best-<method> model: the sweep point it scored


def load_lm_eval_results(paths: list[Path]) -> list[ModelTaskResults]:
    return [_load(Path(path)) for path in paths]


def _load(path: Path) -> ModelTaskResults:
    document = read_json_object(path)
    tasks = document.get("tasks")
    if not isinstance(tasks, dict):
        raise FtcompareError(f"{path}: not lm_eval stage results (no `tasks` mapping)")
    return ModelTaskResults(
        model=str(document.get("model") or path.stem),
        method=str(document.get("method") or ""),
        requested_tasks=[str(task) for task in document.get("requested_tasks") or tasks],
        tasks=tasks,
        limit=document.get("limit"),
        num_fewshot=document.get("num_fewshot"),
        lm_eval_version=document.get("lm_eval_version"),
        best_run=(document.get("best_of") or {}).get("run"),
    )


def limit_note(results: list[ModelTaskResults]) -> str | None:
    """The warning the report shows when any model's results were computed on a row limit."""
    limits = sorted({r.limit for r in results if r.limit is not None})
    if not limits:
        return None
    rows = " or ".join(str(limit) for limit in limits)
    return (
        f"Computed on at most {rows} rows per task (lm_eval.limit), the first rows of each task's split. "
        f'lm-eval says a limit is for testing: "{REAL_METRICS}" Set lm_eval.limit: null to score every row.'
    )


def lm_eval_table(results: list[ModelTaskResults]) -> Table:
    """Model, method, then for each requested task each metric and its stderr, and the rows scored."""
    tasks = _ordered(name for r in results for name in r.requested_tasks)
    columns = [Column("model", "Model"), Column("method", "Method")]
    cells_of = []
    for task in tasks:
        metrics = _ordered(name for r in results for name in r.tasks.get(task, {}).get("metrics", {}))
        for metric in metrics:
            columns.append(Column(f"{task}_{metric}", metric, decimals=4, group=task))
            columns.append(Column(f"{task}_{metric}_stderr", "± stderr", decimals=4, group=task))
            cells_of.append((task, metric, "value"))
            cells_of.append((task, metric, "stderr"))
        columns.append(Column(f"{task}_n", "n", "rows", decimals=0, group=task))
        cells_of.append((task, None, "n_samples"))
    rows = []
    for result in results:
        model = f"{result.model} ({result.best_run})" if result.best_run else result.model
        row = [Cell(model), Cell(result.method or None)]
        for task, metric, field in cells_of:
            entry = result.tasks.get(task, {})
            value = entry.get(field) if metric is None else entry.get("metrics", {}).get(metric, {}).get(field)
            row.append(Cell(as_number(value)))
        rows.append(row)
    return Table(columns=columns, rows=rows, notes=_notes(results))


def _notes(results: list[ModelTaskResults]) -> list[str]:
    versions = sorted({r.lm_eval_version for r in results if r.lm_eval_version})
    shots = sorted({r.num_fewshot for r in results}, key=lambda n: -1 if n is None else n)
    fewshot = ", ".join("each task's default" if n is None else str(n) for n in shots)
    notes = [
        f"Each metric and its standard error as lm-eval {' / '.join(versions) or '(version not recorded)'} "
        f"computed them; n: rows scored per task; few-shot examples: {fewshot}. "
        "The base model and every run were scored on the same rows."
    ]
    note = limit_note(results)
    if note:
        notes.append(note)
    return notes


def _ordered(names) -> list[str]:
    return list(dict.fromkeys(names))
