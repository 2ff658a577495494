"""results/compare/summary.json: the runs grouped by arm and learning rate, each arm's best rate, the
figures at it over seeds, every other arm against the reference arm, and the fairness of the settings.

The format is fixed in the project's interfaces (docs/compare.md describes every field); a run is a dict
of ftcompare.sweep.run_table, its metrics a RunMetrics, its settings those of ftcompare.config.run_settings.
"""

from collections import defaultdict

from ftcompare.compare.measures import MEASURE_BY_KEY, MEASURES, arm_name, measure_values, rate_text
from ftcompare.compare.stats import describe, expected_best, welch_difference
from ftcompare.compare.verdict import verdict
from ftcompare.metrics import RunMetrics
from ftcompare.report.numbers import as_number

RUN_TABLE_KEYS = ["run", "method", "arm", "learning_rate", "seed", "grid", "from_sweep"]
# Config sections whose effective values go side by side in the fairness table.
SETTING_SECTIONS = ("training", "lora", "quantization")
# Effective figures a run recorded that decide a fair comparison, beside its configured settings.
MEASURED_SETTINGS = ("global_batch_size", "train_steps", "tokens_seen", "dtype", "processes")
# Keys that differ between arms by design: the learning rate is tuned per arm.
TUNED_KEYS = {"training.learning_rate"}


def build_summary(
    run_table: list[dict],
    metrics: dict[str, RunMetrics],
    settings: dict[str, dict],
    confidence: float = 0.95,
    reference_method: str | None = "full",
) -> dict:
    """summary.json's content for the runs of `run_table` (metrics and settings keyed by run name)."""
    runs = [
        {**{key: row[key] for key in RUN_TABLE_KEYS}, **measure_values(metrics.get(row["run"]))} for row in run_table
    ]
    by_arm = defaultdict(list)
    for row in runs:
        by_arm[row["arm"]].append(row)
    arms = {name: _arm(by_arm[name], settings, metrics, confidence) for name in sorted(by_arm)}
    reference, reference_note = _reference_arm(arms, reference_method)
    notes = _notes(runs, arms) + ([reference_note] if reference_note else [])
    return {
        "confidence": confidence,
        "sweep": any(row["from_sweep"] for row in runs),
        "single_seed": _single_seed(runs),
        "reference_arm": reference,
        "runs": runs,
        "arms": arms,
        "comparisons": _comparisons(arms, reference, confidence),
        "fairness": fairness_rows(arms),
        "notes": notes,
    }


def _arm(rows: list[dict], settings: dict, metrics: dict, confidence: float) -> dict:
    by_rate = defaultdict(list)
    for row in rows:
        by_rate[row["learning_rate"]].append(row)
    rates = sorted(by_rate)
    per_rate = [
        {"learning_rate": rate, "eval_loss": describe([r["eval_loss"] for r in by_rate[rate]], confidence)}
        for rate in rates
    ]
    best = best_learning_rate(per_rate)
    at_best = by_rate.get(best, [])
    best_run = _best_run(rows)
    return {
        "method": rows[0]["method"],
        "grid": rows[0]["grid"],
        "learning_rates": per_rate,
        "best_learning_rate": best,
        "best_on_edge": edge_of_grid(rates, best),
        "grid_step": grid_step(rates),
        "best_run": best_run,
        "at_best": {m.key: describe([r[m.key] for r in at_best], confidence) for m in MEASURES},
        "expected_best": [
            {"trials": n, "eval_loss": value}
            for n, value in enumerate(expected_best([r["eval_loss"] for r in rows]), start=1)
        ],
        "config": _effective_settings(settings.get(best_run), metrics.get(best_run)) if best_run else {},
    }


def best_learning_rate(per_rate: list[dict]) -> float | None:
    """The rate with the lowest mean held-out loss (the lower rate on a tie); None if no rate has one."""
    measured = [entry for entry in per_rate if entry["eval_loss"]["mean"] is not None]
    if not measured:
        return None
    return min(measured, key=lambda entry: (entry["eval_loss"]["mean"], entry["learning_rate"]))["learning_rate"]


def edge_of_grid(rates: list[float], best: float | None) -> str | None:
    """ "lowest" or "highest" when the best rate is at that end of a grid of two or more rates: the best
    may lie beyond it. None inside the grid, or with one rate (no grid to extend)."""
    if best is None or len(rates) < 2:
        return None
    if best == min(rates):
        return "lowest"
    if best == max(rates):
        return "highest"
    return None


def grid_step(rates: list[float]) -> float | None:
    """The factor between neighbouring rates of the grid: their geometric mean, (highest / lowest)^(1 / (k - 1))."""
    rates = sorted(set(rates))
    if len(rates) < 2 or rates[0] <= 0:
        return None
    return (rates[-1] / rates[0]) ** (1 / (len(rates) - 1))


def _best_run(rows: list[dict]) -> str | None:
    measured = [row for row in rows if row["eval_loss"] is not None]
    return min(measured, key=lambda row: (row["eval_loss"], row["run"]))["run"] if measured else None


def _effective_settings(run_settings: dict | None, metrics: RunMetrics | None) -> dict:
    """The run's settings flattened with dots (training.learning_rate, lora.r), then what it recorded
    itself: the measured settings and the speed options it trained with (options.<name>)."""
    flat = {}
    for section in SETTING_SECTIONS:
        flat.update(_flatten((run_settings or {}).get(section) or {}, section))
    if metrics is not None:
        for key in MEASURED_SETTINGS:
            value = getattr(metrics, key)
            if value is not None:
                flat[key] = value
        flat.update(_flatten(metrics.options or {}, "options"))
    return flat


def _flatten(mapping: dict, prefix: str) -> dict:
    flat = {}
    for key, value in mapping.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name))
        else:
            flat[name] = value
    return flat


def fairness_rows(arms: dict) -> list[dict]:
    """One row per setting some arm's best run has, its value per arm; `differs` flags a key whose values
    differ between two arms that both have it, besides the tuned learning rate and the keys that define
    the arms (a sweep's grid). A key only some methods have (lora.r for a full fine-tune) is the method."""
    keys = sorted({key for arm in arms.values() for key in arm["config"]})
    defining = TUNED_KEYS | {_grid_key(grid_key) for arm in arms.values() for grid_key in arm["grid"]}
    rows = []
    for key in keys:
        values = {name: arm["config"][key] for name, arm in arms.items() if key in arm["config"]}
        distinct = {_comparable(value) for value in values.values()}
        rows.append({"key": key, "values": values, "differs": len(distinct) > 1 and key not in defining})
    return rows


def _grid_key(key: str) -> str:
    """A sweep's grid key as the settings name it: "lora.r" already is; a bare key is a training key."""
    return key if "." in key else f"training.{key}"


def _comparable(value):
    return repr(value) if isinstance(value, (list, dict)) else value


def _reference_arm(arms: dict, reference_method: str | None) -> tuple[str | None, str | None]:
    """The first arm (in name order) of `reference_method`; with none, or no such arm, the first arm."""
    if not arms:
        return None, None
    named = [name for name, arm in arms.items() if arm["method"] == reference_method]
    if named:
        return named[0], None
    first = next(iter(arms))
    if reference_method is None:
        return first, f"compare.reference_method is null: the arms are compared with {first}, the first in name order."
    return first, (
        f"compare.reference_method {reference_method} has no runs: the arms are compared with {first}, "
        "the first in name order."
    )


def _comparisons(arms: dict, reference: str | None, confidence: float) -> list[dict]:
    if reference is None:
        return []
    base = arms[reference]
    comparisons = []
    for name, arm in arms.items():
        if name == reference:
            continue
        for measure in MEASURES:
            values, reference_values = arm["at_best"][measure.key]["values"], base["at_best"][measure.key]["values"]
            result = welch_difference(values, reference_values, confidence)
            n = (len(values), len(reference_values))
            sentence = verdict(
                measure,
                arm_name(name, arm["method"]),
                arm_name(reference, base["method"]),
                result["difference"],
                n,
                confidence,
            )
            comparisons.append(
                {
                    "arm": name,
                    "reference": reference,
                    "metric": measure.key,
                    "difference": result["difference"],
                    "welch": result["welch"],
                    "n": list(n),
                    "learning_rate_ratio": _ratio(arm["best_learning_rate"], base["best_learning_rate"]),
                    "ratio_resolution": _coarser(arm["grid_step"], base["grid_step"]),
                    "verdict": sentence,
                }
            )
    return comparisons


def _ratio(numerator, denominator) -> float | None:
    numerator, denominator = as_number(numerator), as_number(denominator)
    return numerator / denominator if numerator is not None and denominator else None


def _coarser(*steps) -> float | None:
    known = [step for step in steps if step is not None]
    return max(known) if known else None


def _single_seed(runs: list[dict]) -> bool:
    seeds = defaultdict(set)
    for row in runs:
        seeds[(row["arm"], row["learning_rate"])].add(row["seed"])
    return all(len(s) <= 1 for s in seeds.values())


def _notes(runs: list[dict], arms: dict) -> list[str]:
    notes = []
    if _single_seed(runs):
        notes.append(
            "One seed per learning rate: no intervals and no Welch tests; each difference is one run against "
            "one run. Add seeds for intervals."
        )
    for row in runs:
        if row["eval_loss"] is None:
            notes.append(f"{row['run']}: no held-out loss recorded; left out of the statistics.")
    for name, arm in arms.items():
        best, rates = arm["best_learning_rate"], [entry["learning_rate"] for entry in arm["learning_rates"]]
        if best is None:
            notes.append(f"{name}: no run has a held-out loss; no best learning rate.")
        elif arm["best_on_edge"]:
            notes.append(
                f"{name}: the best rate {rate_text(best)} is the {arm['best_on_edge']} of the grid; extend the grid."
            )
        elif len(rates) == 1:
            notes.append(
                f"{name}: one learning rate ({rate_text(best)}), not tuned: its best rate is unknown, and the "
                "comparison is at this rate."
            )
    return notes


def measure_unit(key: str) -> str:
    return MEASURE_BY_KEY[key].unit
