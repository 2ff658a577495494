"""Sweeps: the config's `sweep:` section expanded into runs, the config's `select_runs`, the models that
generate (the base, the hand-written runs, each swept method's best run), and the run table.

A sweep point is an ordinary entry of config["runs"] once ftcompare.config.validate_config has added it,
named from its settings alone (`lora-r32-lr3e-4-s43`), so the same grid gives the same names and a rerun
reuses what was trained. Torch-free: rules/common.smk calls it on every Snakemake start.
"""

import fnmatch
import itertools
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import jsonschema

from ftcompare.errors import FtcompareError
from ftcompare.metrics import read_metrics

METHODS = ("lora", "qlora", "full")
# The `select_runs` word for every sweep point.
SWEEP_WORD = "sweep"
BEST_PREFIX = "best-"
# The sections a grid key or a fixed override may name, and the methods that read each.
SECTION_METHODS = {"training": METHODS, "lora": ("lora", "qlora"), "quantization": ("qlora",)}
MAX_NAME_LENGTH = 64

log = logging.getLogger("ftcompare.sweep")


@dataclass(frozen=True)
class SweepPoint:
    run: str
    method: str
    learning_rate: float
    seed: int
    grid: dict  # the point's values of the grid's other keys ("lora.r": 32), in the grid's key order
    spec: dict  # its entry of config["runs"]


def number_label(value) -> str:
    """A number in its shortest exact form: 3e-4, 2.5e-4, 1e-3 for floats below 0.01 or from 1e4, else
    0.05, 16; an integral float as an integer."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"not a number: {value!r}")
    if isinstance(value, int) or (value.is_integer() and abs(value) < 1e4):
        return str(int(value))
    if 1e-2 <= abs(value) < 1e4:
        return repr(value)
    return exponent_label(value)


def exponent_label(value: float) -> str:
    """`value` as mantissa e exponent with the fewest digits that give back the same float: 3e-4, 2.5e-4."""
    for digits in range(17):
        text = f"{value:.{digits}e}"
        if float(text) == value:
            break
    mantissa, exponent = text.split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def learning_rates(spec) -> list[float]:
    """A method's `learning_rates`: the list as given, or {from, to, points} log-spaced and rounded to three
    significant digits (so that the names stay short and stable)."""
    if isinstance(spec, list):
        return [float(rate) for rate in spec]
    low, high, points = float(spec["from"]), float(spec["to"]), int(spec["points"])
    rates = [low * (high / low) ** (i / (points - 1)) for i in range(points)]
    return [float(f"{rate:.2e}") for rate in rates]


def sweep_seeds(config: dict) -> list[int]:
    """`sweep.seeds`: a count n (the top-level seed and the n - 1 after it) or an explicit list."""
    seeds = config.get("sweep", {}).get("seeds", 1)
    if isinstance(seeds, int):
        return [config["seed"] + i for i in range(seeds)]
    return list(seeds)


def sweep_points(config: dict) -> list[SweepPoint]:
    """Every point of `sweep:`: per method (in the order given), each learning rate, each combination of
    the grid's other values, each seed."""
    section = config.get("sweep") or {}
    seeds = sweep_seeds(config)
    points = []
    for method, spec in (section.get("methods") or {}).items():
        grid = spec.get("grid") or {}
        for rate in learning_rates(spec["learning_rates"]):
            for values in itertools.product(*grid.values()):
                chosen = dict(zip(grid, values))
                for seed in seeds:
                    name = point_name(method, chosen, rate, seed)
                    run_spec = _point_spec(method, spec, chosen, rate, seed)
                    points.append(SweepPoint(name, method, rate, seed, chosen, run_spec))
    return points


def point_name(method: str, grid: dict, learning_rate: float, seed: int) -> str:
    """`lora-r32-lr3e-4-s43`: the method, each grid value (the key's last part and the value, in the grid's
    key order), the learning rate and the seed."""
    parts = [method] + [_grid_label(key, value) for key, value in grid.items()]
    return "-".join(parts + [f"lr{exponent_label(learning_rate)}", f"s{seed}"])


def sweep_problems(config: dict, points: list[SweepPoint], schema: dict) -> list[str]:
    """What is wrong with `sweep:` beyond its schema: grid keys, values a run does not allow, names."""
    problems = []
    for method, spec in ((config.get("sweep") or {}).get("methods") or {}).items():
        problems += _method_problems(method, spec, schema)
    if problems:
        return problems
    run_schema = {"$defs": schema["$defs"], **schema["properties"]["runs"]["additionalProperties"]}
    validator = jsonschema.Draft202012Validator(run_schema)
    seen: dict[str, SweepPoint] = {}
    hand_written = config.get("runs") or {}
    for point in points:
        where = f"sweep.methods.{point.method} (point {point.run})"
        for error in validator.iter_errors(point.spec):
            path = ".".join(map(str, error.absolute_path))
            problems.append(f"{where}: `{path}` = {error.instance!r}: {error.message}")
        if len(point.run) > MAX_NAME_LENGTH:
            problems.append(f"{where}: the name is longer than {MAX_NAME_LENGTH} characters; use fewer grid keys")
        if point.run in seen:
            problems.append(f"{where}: two sweep points would both be named {point.run!r}; make the values differ")
        seen[point.run] = point
        # A validated config holds its points already: the same entry under the same name is no collision.
        if point.run in hand_written and hand_written[point.run] != point.spec:
            problems.append(
                f"runs.{point.run}: the name of a sweep point of sweep.methods.{point.method}; rename the run"
            )
    for method in sorted({point.method for point in points}):
        if BEST_PREFIX + method in hand_written:
            problems.append(
                f"runs.{BEST_PREFIX}{method}: the name of the model generated from the {method} sweep's best run; "
                f"rename the run"
            )
    return list(dict.fromkeys(problems))


def add_sweep_runs(config: dict, schema: dict) -> list[str]:
    """Add every sweep point to config["runs"] (after the hand-written runs); the problems, if any, instead."""
    points = sweep_points(config)
    problems = sweep_problems(config, points, schema)
    if not problems:
        config["runs"].update({point.run: point.spec for point in points})
    return problems


def select_runs(config: dict) -> list[str]:
    """Keep only the runs `select_runs` names (null: all); the problems, if any, instead."""
    patterns = config.get("select_runs")
    if patterns is None:
        return []
    swept = {point.run for point in sweep_points(config)}
    problems, selected = [], set()
    for pattern in patterns:
        matched = {run for run in config["runs"] if fnmatch.fnmatchcase(run, pattern)}
        if pattern == SWEEP_WORD:
            matched |= swept
        if not matched:
            problems.append(
                f"select_runs: {pattern!r} matches no run; runs here: {_short_names(list(config['runs']))}"
                + ("" if swept else " (and no sweep points: `sweep` selects them)")
            )
        selected |= matched
    if problems:
        return problems
    config["runs"] = {run: spec for run, spec in config["runs"].items() if run in selected}
    return []


def best_model_candidates(config: dict) -> dict[str, list[str]]:
    """{"best-lora": the lora sweep points among the runs, by name, ...}: each swept method's best-run model."""
    candidates: dict[str, list[str]] = {}
    for point in sweep_points(config):
        if point.run in config["runs"]:
            candidates.setdefault(BEST_PREFIX + point.method, []).append(point.run)
    return {model: sorted(runs) for model, runs in candidates.items()}


def model_names(config: dict) -> list[str]:
    """The models that generate: the base, every hand-written run, each swept method's best run, and with
    generation.all_runs every sweep point too."""
    swept = {point.run for point in sweep_points(config)}
    runs = [run for run in config["runs"] if config["generation"].get("all_runs") or run not in swept]
    return ["base"] + runs + list(best_model_candidates(config))


def pick_best_run(eval_losses: dict[str, float | None]) -> str:
    """The run with the lowest held-out loss (ties: the first name); runs without a finite loss never win."""
    finite = {run: loss for run, loss in eval_losses.items() if loss is not None and math.isfinite(loss)}
    if not finite:
        raise FtcompareError(f"no run has a finite held-out loss to pick the best by: {', '.join(sorted(eval_losses))}")
    return min(sorted(finite), key=lambda run: finite[run])


def best_run(candidates, metrics_paths) -> dict:
    """What a best-<method> model records under `best_of`: the candidate run (names in the order of
    `metrics_paths`, their metrics.json files) with the lowest held-out loss, and every candidate's loss."""
    losses = {run: read_metrics(Path(path), run).eval_loss for run, path in zip(candidates, metrics_paths, strict=True)}
    picked = pick_best_run(losses)
    return {"run": picked, "metric": "eval_loss", "eval_loss": losses[picked], "candidates": losses}


def model_to_load(smk) -> tuple[str | None, dict | None, dict | None]:
    """What a generate or lm_eval job loads: (the run's model folder or None for the base, its quantization or
    None, the `best_of` record or None). A best-<method> model is its candidate with the lowest held-out loss."""
    if not smk.params.candidates:
        return smk.input.get("run_model"), smk.params.quantization or None, None
    best_of = best_run(smk.params.candidates, smk.input.candidate_metrics)
    run_model = smk.input.candidate_models[list(smk.params.candidates).index(best_of["run"])]
    log.info("%s: run %s, held-out loss %s", smk.wildcards.model, best_of["run"], best_of["eval_loss"])
    return run_model, smk.params.candidates[best_of["run"]] or None, best_of


def run_table(config: dict) -> list[dict]:
    """One row per run of a validated config (its selected runs), sorted by name: run, method, arm,
    learning_rate, seed, grid, from_sweep."""
    points = {point.run: point for point in sweep_points(config)}
    rows = []
    for run, spec in config["runs"].items():
        point = points.get(run)
        grid = dict(point.grid) if point else {}
        rate = {**config["training"], **spec.get("training", {})}["learning_rate"]
        rows.append(
            {
                "run": run,
                "method": spec["method"],
                "arm": arm_name(spec["method"], grid),
                "learning_rate": rate,
                "seed": spec.get("seed", config["seed"]),
                "grid": grid,
                "from_sweep": point is not None,
            }
        )
    return sorted(rows, key=lambda row: row["run"])


def arm_name(method: str, grid: dict) -> str:
    """The method, plus a sweep point's grid values: `lora r=32`."""
    return " ".join([method] + [f"{key.split('.')[-1]}={_value_text(value)}" for key, value in grid.items()])


def _point_spec(method: str, spec: dict, grid: dict, learning_rate: float, seed: int) -> dict:
    point = {"method": method, "seed": seed}
    for section in SECTION_METHODS:
        values = {**spec.get(section, {})}
        values.update({key.split(".", 1)[1]: value for key, value in grid.items() if key.split(".", 1)[0] == section})
        if section == "training":
            values["learning_rate"] = learning_rate
        if values:
            point[section] = values
    return point


def _method_problems(method: str, spec: dict, schema: dict) -> list[str]:
    where = f"sweep.methods.{method}"
    problems = []
    if "learning_rate" in spec.get("training", {}):
        problems.append(f"{where}.training.learning_rate: set the rates in {where}.learning_rates")
    for section in SECTION_METHODS:
        if spec.get(section) and method not in SECTION_METHODS[section]:
            problems.append(f"{where}.{section}: {method} runs do not read `{section}`")
    for key in spec.get("grid") or {}:
        section, _, name = key.partition(".")
        allowed = schema["$defs"].get(section, {}).get("properties", {}) if section in SECTION_METHODS else {}
        if name not in allowed:
            keys = [f"{s}.{k}" for s in SECTION_METHODS for k in schema["$defs"][s]["properties"]]
            problems.append(f"{where}.grid: unknown key {key!r}; allowed: section.key, e.g. {', '.join(keys[:6])}, ...")
        elif key == "training.learning_rate":
            problems.append(f"{where}.grid: training.learning_rate is swept by {where}.learning_rates")
        elif method not in SECTION_METHODS[section]:
            problems.append(f"{where}.grid: {key}: {method} runs do not read `{section}`")
    return problems


def _grid_label(key: str, value) -> str:
    name = key.split(".")[-1]
    text = _value_text(value)
    text = re.sub(r"[^A-Za-z0-9_.-]", "_", text)
    return f"{name}{text}" if text[:1].isdigit() else f"{name}_{text}"


def _value_text(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return number_label(value)
    if isinstance(value, list):
        return ".".join(_value_text(item) for item in value)
    return str(value)


def _short_names(names: list[str], limit: int = 12) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", ... ({len(names)} in all)"
