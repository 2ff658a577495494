"""Task benchmarks through EleutherAI's lm-evaluation-harness (lm-eval): one loaded model on the configured
tasks, each metric with its standard error, as one strict-JSON document.

lm-eval ships task definitions but no data: its own tasks read theirs from the Hugging Face hub, and a
task in a folder of task YAMLs (`include_path`) can read a local file (`dataset_path: json` and
`data_files`). Relative `data_files` there are taken relative to the YAML's folder, so that a task folder
works from any working directory (lm-eval itself would take them relative to the working directory).
"""

import difflib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ftcompare.errors import FtcompareError

log = logging.getLogger("ftcompare.lm_eval")

# lm-eval's own words (lm_eval/config/evaluate_config.py) for results computed with --limit.
LIMIT_WARNING = "--limit SHOULD ONLY BE USED FOR TESTING. REAL METRICS SHOULD NOT BE COMPUTED USING LIMIT."
NO_FILTER = "none"


@dataclass(frozen=True)
class LmEvalSettings:
    """The config's lm_eval section (defaults in config/config.schema.yaml), include_path resolved."""

    tasks: list[str]
    limit: int | None
    num_fewshot: int | None
    batch_size: int
    bootstrap_iters: int
    include_path: str | None

    @classmethod
    def from_params(cls, section: dict) -> "LmEvalSettings":
        return cls(
            tasks=list(section["tasks"]),
            limit=section["limit"],
            num_fewshot=section["num_fewshot"],
            batch_size=section["batch_size"],
            bootstrap_iters=section["bootstrap_iters"],
            include_path=section["include_path"],
        )


def task_manager(tasks: list[str], include_path: str | None):
    """lm-eval's TaskManager: the task YAMLs in `include_path`, and lm-eval's own tasks unless every task
    is in `include_path` (indexing lm-eval's thousands of task files takes a while)."""
    from lm_eval.tasks import TaskManager

    if include_path is not None:
        local = TaskManager(include_path=include_path, include_defaults=False)
        if set(tasks) <= set(local.all_tasks):
            return local
    return TaskManager(include_path=include_path)


def check_task_names(manager, tasks: list[str], include_path: str | None) -> None:
    """Refuse, naming them, the tasks lm-eval knows under no name (task, group or tag)."""
    known = set(manager.all_tasks)
    unknown = [task for task in tasks if task not in known]
    if not unknown:
        return
    hints = []
    for task in unknown:
        close = difflib.get_close_matches(task, known, n=3)
        hints.append(f"{task!r}" + (f" (did you mean {', '.join(map(repr, close))}?)" if close else ""))
    where = f"lm-eval {lm_eval_version()}'s tasks" + (f" or the task YAMLs in {include_path}" if include_path else "")
    raise FtcompareError(
        f"lm_eval.tasks: lm-eval knows no task {', '.join(hints)} among {where}; "
        f"`lm-eval ls tasks` lists them, and a local task goes in a folder named by lm_eval.include_path"
    )


def task_specs(manager, tasks: list[str], include_path: str | None) -> list:
    """What to hand lm-eval for each task: its name, or, for a task from `include_path` whose data_files
    are relative paths, its whole config with those paths made relative to its YAML's folder."""
    specs = []
    for task in tasks:
        yaml_path = getattr(manager.task_index.get(task), "yaml_path", None)
        if not _in_folder(yaml_path, include_path):
            specs.append(task)
            continue
        config = _task_yaml(Path(yaml_path))
        resolved = _resolved_data_files(config.get("dataset_kwargs"), Path(yaml_path).parent)
        if resolved is None:
            specs.append(task)
        else:
            specs.append({**config, "dataset_kwargs": resolved})
    return specs


def _in_folder(path, folder) -> bool:
    return path is not None and folder is not None and Path(folder).resolve() in Path(path).resolve().parents


def _task_yaml(path: Path) -> dict:
    from lm_eval.tasks._yaml_loader import load_yaml  # the loader TaskManager uses: `include:` and `!function`

    config = load_yaml(path, resolve_func=True)
    for key in ("tag", "group"):
        config.pop(key, None)
    return config


def _resolved_data_files(dataset_kwargs, folder: Path):
    """dataset_kwargs with relative data_files under `folder`; None when no path is relative."""
    if not isinstance(dataset_kwargs, dict) or "data_files" not in dataset_kwargs:
        return None
    files = dataset_kwargs["data_files"]
    changed = False

    def resolve(path):
        nonlocal changed
        if isinstance(path, str) and "://" not in path and not Path(path).is_absolute():
            changed = True
            return str(folder / path)
        return path

    if isinstance(files, dict):
        files = {split: [resolve(p) for p in v] if isinstance(v, list) else resolve(v) for split, v in files.items()}
    elif isinstance(files, list):
        files = [resolve(p) for p in files]
    else:
        files = resolve(files)
    return {**dataset_kwargs, "data_files": files} if changed else None


def run_tasks(model, tokenizer, settings: LmEvalSettings) -> dict:
    """lm-eval's simple_evaluate on an already-loaded model (HFLM wraps it on its own device)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    manager = task_manager(settings.tasks, settings.include_path)
    check_task_names(manager, settings.tasks, settings.include_path)
    if settings.limit is not None:
        log.warning("lm_eval.limit = %d rows per task: %s", settings.limit, LIMIT_WARNING)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=settings.batch_size)
    return simple_evaluate(
        model=lm,
        tasks=task_specs(manager, settings.tasks, settings.include_path),
        num_fewshot=settings.num_fewshot,
        limit=settings.limit,
        bootstrap_iters=settings.bootstrap_iters,
        task_manager=manager,
        log_samples=False,
    )


def summarise(results: dict, settings: LmEvalSettings, model: str, method: str, seconds: float) -> dict:
    """The stage's JSON document: per task (and group) each metric with its stderr and the samples it saw."""
    groups = set(results.get("groups", {}))
    tasks = {}
    for name, row in results["results"].items():
        samples = results.get("n-samples", {}).get(name, {})
        tasks[name] = {
            "alias": str(row.get("alias", name)).strip(),
            "group": name in groups,
            "metrics": _metrics(row),
            "n_samples": samples.get("effective"),
            "n_samples_available": samples.get("original"),
            "num_fewshot": results.get("n-shot", {}).get(name),
            "version": results.get("versions", {}).get(name),
            "higher_is_better": results.get("higher_is_better", {}).get(name, {}),
        }
    return {
        "model": model,
        "method": method,
        "requested_tasks": list(settings.tasks),
        "tasks": tasks,
        "limit": settings.limit,
        "limit_warning": LIMIT_WARNING if settings.limit is not None else None,
        "num_fewshot": settings.num_fewshot,
        "batch_size": settings.batch_size,
        "bootstrap_iters": settings.bootstrap_iters,
        "include_path": settings.include_path,
        "lm_eval_version": lm_eval_version(),
        "seconds": seconds,
    }


def _metrics(row: dict) -> dict:
    """{"acc": {"value", "stderr", "filter"}} from lm-eval's "acc,none" and "acc_stderr,none" keys.

    A metric under a filter other than "none" is named "metric,filter"; a stderr lm-eval could not
    compute ("N/A") is null.
    """
    metrics = {}
    for key, value in row.items():
        if "," not in key or "_stderr," in key:
            continue
        metric, filter_name = key.split(",", 1)
        stderr = row.get(f"{metric}_stderr,{filter_name}")
        name = metric if filter_name == NO_FILTER else key
        metrics[name] = {"value": _number(value), "stderr": _number(stderr), "filter": filter_name}
    return metrics


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None


def evaluate_model(model, tokenizer, settings: LmEvalSettings, model_name: str, method: str) -> dict:
    started = time.perf_counter()
    results = run_tasks(model, tokenizer, settings)
    seconds = time.perf_counter() - started
    document = summarise(results, settings, model_name, method, seconds)
    for task in settings.tasks:
        metrics = document["tasks"].get(task, {}).get("metrics", {})
        log.info(
            "%s on %s: %s",
            model_name,
            task,
            ", ".join(f"{name} {m['value']} ± {m['stderr']}" for name, m in metrics.items()) or "no metrics",
        )
    return document


def lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")
