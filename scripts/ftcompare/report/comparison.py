"""The report's comparison section: results/compare/summary.json (the `compare` rule's summary of every
run per arm: learning-rate curve, the best rate, statistics over seeds there, the differences between
arms with Welch's test, expected best loss against trials, the fairness of the settings) as the tables,
sentences and figures the template prints.

The numbers are the summary's own: this module formats and arranges, it computes nothing new. Every table
goes through ftcompare.report.table, so each number reaches the page with its exact value beside it.
"""

import math
import os
from dataclasses import dataclass
from pathlib import Path

from ftcompare.errors import FtcompareError
from ftcompare.report.numbers import as_number, format_number
from ftcompare.report.render import HtmlFigure, HtmlTable, html_table, png_data_uri
from ftcompare.report.table import Cell, Column, Table
from ftcompare.strict_json import read_json_object

SUMMARY_KEYS = (
    "confidence",
    "sweep",
    "single_seed",
    "reference_arm",
    "runs",
    "arms",
    "comparisons",
    "fairness",
    "notes",
)
SWEEP_CONFIG = "config/sweep.yaml"
SWEEP_DOCS = "docs/sweeps.md"
BEST_MARK = "◀\u00a0best"  # in words, not by colour alone; the no-break space keeps it on one line
# Beyond this many runs the per-run detail (a verdict and headline row per run, the per-run figures, the
# prompt-by-prompt answers) folds away under <details>: the comparison leads, and 50 runs stay readable.
MANY_RUNS = 8
# The compare rule's tables, beside its figures folder (results/compare/tables/<name>.csv and .tex).
COMPARE_TABLES = ["learning_rates", "at_best", "comparisons", "fairness", "expected_best"]


@dataclass(frozen=True)
class StatRow:
    """A row of the at-best table: a statistic of summary.json's `at_best`, its label and unit as shown."""

    key: str
    label: str
    unit: str
    decimals: int | None = None
    significant: int | None = None
    scale: float = 1.0  # shown value = summary value / scale (energy in kJ, compute in a fitting SI unit)


AT_BEST_ROWS = [
    StatRow("eval_loss", "Held-out loss", "nats/token", decimals=3),
    StatRow("final_train_loss", "Final training loss", "nats/token", decimals=3),
    StatRow("mean_train_loss", "Mean training loss", "nats/token", decimals=3),
    StatRow("train_runtime_s", "Training runtime", "s", decimals=1),
    StatRow("train_samples_per_s", "Throughput", "samples/s", significant=3),
    StatRow("train_tokens_per_s", "Throughput", "tokens/s", significant=3),
    StatRow("peak_memory_mb", "Peak memory", "MB", decimals=0),
    StatRow("energy_j", "Energy", "kJ", significant=3, scale=1000.0),
    StatRow("tokens_seen", "Tokens seen", "tokens", decimals=0),
    StatRow("flops", "Training compute", "FLOP", significant=3),
]
FLOP_UNITS = [(1e18, "EFLOP"), (1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP"), (1.0, "FLOP")]

# The compare rule's figures, in the order the section shows them: (title, caption).
COMPARE_FIGURES = {
    "loss_vs_learning_rate": (
        "Held-out loss against learning rate",
        "Mean held-out loss (nats/token) over seeds at each learning rate of each arm, with its {confidence} "
        "t-interval as error bars; the learning rate on a log axis. The lowest point of each curve is the arm's "
        "best rate; a best rate at either end of the grid means the grid should be extended. "
        "Source: results/compare/summary.json (each run's held-out eval).",
    ),
    "expected_best": (
        "Expected best held-out loss against the number of trials",
        "The held-out loss (nats/token) one expects as the best of n runs drawn at random from each arm's runs, "
        "against n (expected validation performance, Dodge et al. 2019): an arm whose curve falls faster needs "
        "fewer trials to tune. Source: results/compare/summary.json.",
    ),
    "loss_vs_flops": (
        "Held-out loss against training compute",
        "Each run's held-out loss (nats/token) against the floating-point operations its training took (FLOP, "
        "log axis), one marker per run, coloured by arm. Source: results/compare/summary.json (tokens seen and "
        "FLOPs per run).",
    ),
}


@dataclass(frozen=True)
class ArmLearningRates:
    arm: str
    method: str | None
    best_learning_rate: str
    best_on_edge: str | None
    table: HtmlTable


@dataclass(frozen=True)
class ComparisonSection:
    sweep: bool
    single_seed: bool
    confidence: str  # "95%"
    reference_arm: str | None
    run_count: int
    verdicts: list[str]
    other_verdicts: dict[str, list[str]]  # "lora − full": the sentences on time, memory, energy, ...
    rate_sentences: list[str]
    notes: list[str]
    learning_rates: list[ArmLearningRates]
    at_best: HtmlTable
    comparisons: HtmlTable | None
    expected_best: HtmlTable
    fairness: HtmlTable
    differing_settings: list[str]
    runs: HtmlTable
    figures: list[HtmlFigure]
    missing_figures: list[str]
    table_files: list[str]  # the compare rule's CSV and LaTeX tables, relative to report.html
    sweep_config: str = SWEEP_CONFIG
    sweep_docs: str = SWEEP_DOCS


def read_summary(path: Path) -> dict:
    """summary.json, strict JSON, with the keys the section reads; a short message naming the file otherwise."""
    summary = read_json_object(Path(path))
    missing = [key for key in SUMMARY_KEYS if key not in summary]
    if missing:
        raise FtcompareError(f"{path}: not a compare summary, it lacks {', '.join(missing)}")
    if not isinstance(summary["arms"], dict) or not isinstance(summary["runs"], list):
        raise FtcompareError(f"{path}: `arms` must be an object and `runs` a list")
    return summary


def comparison_section(summary: dict, figures_dir: Path | None, report_dir: Path) -> ComparisonSection:
    """Everything the template's comparison section prints. `report_dir` is where report.html lies: the
    links to the figures' PDF and SVG files are relative to it."""
    confidence = percent(summary["confidence"])
    fairness = fairness_table(summary)
    figures, missing = comparison_figures(figures_dir, report_dir, confidence)
    comparisons = comparisons_table(summary)
    return ComparisonSection(
        sweep=bool(summary["sweep"]),
        single_seed=bool(summary["single_seed"]),
        confidence=confidence,
        reference_arm=summary["reference_arm"],
        run_count=len(summary["runs"]),
        verdicts=loss_verdicts(summary),
        other_verdicts=other_verdicts(summary),
        rate_sentences=rate_sentences(summary),
        notes=[str(note) for note in summary["notes"]],
        learning_rates=[
            ArmLearningRates(
                arm,
                entry.get("method"),
                learning_rate_text(entry.get("best_learning_rate")),
                entry.get("best_on_edge"),
                html_table(learning_rate_table(arm, entry, confidence)),
            )
            for arm, entry in summary["arms"].items()
        ],
        at_best=html_table(at_best_table(summary)),
        comparisons=html_table(comparisons) if comparisons.rows else None,
        expected_best=html_table(expected_best_table(summary)),
        fairness=html_table(fairness),
        differing_settings=[row["key"] for row in summary["fairness"] if row.get("differs")],
        runs=html_table(runs_table(summary)),
        figures=figures,
        missing_figures=missing,
        table_files=comparison_table_files(figures_dir, report_dir),
    )


def percent(confidence) -> str:
    value = as_number(confidence)
    return f"{value * 100:g}%" if value is not None else "95%"


def learning_rate_text(rate) -> str:
    """A learning rate as papers write it: 3e-4, 2.5e-5, 1e-2; 1 and above as a plain number."""
    rate = as_number(rate)
    if rate is None:
        return "—"
    if rate == 0 or abs(rate) >= 1:
        return f"{rate:g}"
    mantissa, exponent = f"{rate:.3e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _stat_cells(stat: dict | None, decimals=None, significant=None, scale: float = 1.0) -> list[Cell]:
    stat = stat or {}
    return [Cell(_scaled(stat.get(key), scale), None, decimals, significant) for key in ("mean", "ci_low", "ci_high")]


def _scaled(value, scale: float):
    value = as_number(value)
    return value / scale if value is not None and scale != 1.0 else value


def _interval_columns(prefix: str, group: str, unit: str, confidence: str, decimals=None, significant=None):
    return [
        Column(f"{prefix}mean", "mean", unit, decimals=decimals, significant=significant, group=group),
        Column(f"{prefix}ci_low", f"{confidence} low", unit, decimals=decimals, significant=significant, group=group),
        Column(f"{prefix}ci_high", f"{confidence} high", unit, decimals=decimals, significant=significant, group=group),
    ]


def learning_rate_table(arm: str, entry: dict, confidence: str) -> Table:
    """Learning rate -> mean held-out loss with its interval and the seeds behind it; the best row marked."""
    columns = [
        Column("learning_rate", "Learning rate"),
        *_interval_columns("eval_loss_", "Held-out loss", "nats/token", confidence, decimals=3),
        Column("n", "Seeds", decimals=0),
        Column("mark", "Best"),
    ]
    best = as_number(entry.get("best_learning_rate"))
    rows = []
    for point in entry.get("learning_rates", []):
        rate = as_number(point.get("learning_rate"))
        stat = point.get("eval_loss") or {}
        mark = ""
        if best is not None and rate is not None and math.isclose(rate, best, rel_tol=1e-9):
            edge = entry.get("best_on_edge")
            mark = f"{BEST_MARK}, {edge} rate of the grid" if edge else BEST_MARK
        rows.append([Cell(learning_rate_text(rate)), *_stat_cells(stat, 3), Cell(stat.get("n")), Cell(mark)])
    notes = []
    if entry.get("best_on_edge"):
        notes.append(
            f"The best rate is the {entry['best_on_edge']} of the grid: the optimum may lie beyond it; "
            "extend the grid in that direction."
        )
    return Table(columns, rows, notes)


def flop_unit(values: list) -> tuple[float, str]:
    """The SI unit the largest of `values` reads best in."""
    top = max((abs(v) for v in map(as_number, values) if v is not None), default=0.0)
    return next(((scale, unit) for scale, unit in FLOP_UNITS if top >= scale), (1.0, "FLOP"))


def at_best_rows(summary: dict) -> list[StatRow]:
    """AT_BEST_ROWS with the compute row in a unit that fits the summary's numbers."""
    flops = [(arm.get("at_best") or {}).get("flops", {}) or {} for arm in summary["arms"].values()]
    scale, unit = flop_unit([stat.get(key) for stat in flops for key in ("mean", "ci_low", "ci_high")])
    return [
        StatRow(row.key, row.label, unit, row.decimals, row.significant, scale) if row.key == "flops" else row
        for row in AT_BEST_ROWS
    ]


def at_best_table(summary: dict) -> Table:
    """A row per statistic, for each arm its mean over seeds at the arm's best learning rate and the interval."""
    confidence = percent(summary["confidence"])
    columns = [Column("statistic", "At each arm's best learning rate")]
    for arm, entry in summary["arms"].items():
        n = ((entry.get("at_best") or {}).get("eval_loss") or {}).get("n")
        group = f"{arm} · lr {learning_rate_text(entry.get('best_learning_rate'))} · {_seeds(n)}"
        columns += _interval_columns(f"{arm}:", group, "", confidence, significant=3)
    rows = []
    for stat_row in at_best_rows(summary):
        cells = [Cell(f"{stat_row.label} [{stat_row.unit}]")]
        for entry in summary["arms"].values():
            stat = (entry.get("at_best") or {}).get(stat_row.key)
            cells += _stat_cells(stat, stat_row.decimals, stat_row.significant, stat_row.scale)
        rows.append(cells)
    notes = [
        f"Mean over seeds and its {confidence} t-interval, for each arm at its own best learning rate; "
        "an interval needs two seeds or more. Energy and memory as each run's telemetry measured them."
    ]
    return Table(columns, rows, notes)


def _seeds(n) -> str:
    n = as_number(n)
    if n is None:
        return "no runs"
    return f"{int(n)} seed" + ("" if n == 1 else "s")


def comparisons_table(summary: dict) -> Table:
    """A row per comparison (arm against the reference, one measure): the difference with its interval,
    Welch's test, the seeds; on the held-out loss row, the ratio of the best learning rates."""
    confidence = percent(summary["confidence"])
    rows_by_key = {row.key: row for row in at_best_rows(summary)}
    columns = [
        Column("comparison", "Arm − reference"),
        Column("metric", "Measure [unit]"),
        *_interval_columns("difference_", "Difference, arm − reference", "", confidence, significant=3),
        Column("welch_t", "t", decimals=2, group="Welch's t-test"),
        Column("welch_p", "p", significant=2, group="Welch's t-test"),
        Column("welch_df", "df", decimals=1, group="Welch's t-test"),
        Column("n_arm", "arm", decimals=0, group="Seeds"),
        Column("n_reference", "reference", decimals=0, group="Seeds"),
        Column("learning_rate_ratio", "ratio", "×", significant=3, group="Best learning rate, arm ÷ reference"),
        Column(
            "ratio_resolution",
            "known within a factor of",
            "×",
            significant=3,
            group="Best learning rate, arm ÷ reference",
        ),
    ]
    rows = []
    for comparison in summary["comparisons"]:
        metric = comparison.get("metric") or "eval_loss"
        stat_row = rows_by_key.get(metric, StatRow(metric, str(metric), "", significant=3))
        difference, welch = comparison.get("difference") or {}, comparison.get("welch") or {}
        n = list(comparison.get("n") or []) + [None, None]
        on_loss = metric == "eval_loss"
        rows.append(
            [
                Cell(f"{comparison['arm']} − {comparison['reference']}"),
                Cell(f"{stat_row.label} [{stat_row.unit}]" if stat_row.unit else stat_row.label),
                *_stat_cells(difference, stat_row.decimals, stat_row.significant, stat_row.scale),
                Cell(as_number(welch.get("t"))),
                Cell(as_number(welch.get("p"))),
                Cell(as_number(welch.get("df"))),
                Cell(n[0]),
                Cell(n[1]),
                Cell(as_number(comparison.get("learning_rate_ratio")) if on_loss else ""),
                Cell(as_number(comparison.get("ratio_resolution")) if on_loss else ""),
            ]
        )
    notes = [
        f"Difference of the means at each arm's best learning rate, with its {confidence} Welch interval: "
        "for a loss, below zero the arm did better than the reference. Welch's t-test does not assume equal "
        "variances; with one seed in an arm there is no interval and no test. The learning-rate ratio is "
        "known only to within the coarser grid step of the two arms."
    ]
    return Table(columns, rows, notes)


def loss_verdicts(summary: dict) -> list[str]:
    """The verdict sentences on the held-out loss: the comparison's headline."""
    return [str(c["verdict"]) for c in summary["comparisons"] if c.get("verdict") and _on_loss(c)]


def other_verdicts(summary: dict) -> dict[str, list[str]]:
    """The verdicts on every other measure (time, memory, energy, ...), per arm."""
    by_arm: dict[str, list[str]] = {}
    for comparison in summary["comparisons"]:
        if comparison.get("verdict") and not _on_loss(comparison):
            by_arm.setdefault(f"{comparison['arm']} − {comparison['reference']}", []).append(str(comparison["verdict"]))
    return by_arm


def _on_loss(comparison: dict) -> bool:
    return (comparison.get("metric") or "eval_loss") == "eval_loss"


def rate_sentences(summary: dict) -> list[str]:
    """Each arm's best learning rate, and each comparison's ratio of best rates with its resolution."""
    sentences = []
    for arm, entry in summary["arms"].items():
        rates = [p.get("learning_rate") for p in entry.get("learning_rates", [])]
        grid = (
            f"of {len(rates)} rates from {learning_rate_text(min(rates))} to {learning_rate_text(max(rates))}"
            if len(rates) > 1
            else "its only rate"
        )
        edge = f", the {entry['best_on_edge']} of the grid" if entry.get("best_on_edge") else ""
        sentences.append(
            f"{arm}: best learning rate {learning_rate_text(entry.get('best_learning_rate'))} ({grid}{edge})."
        )
    for comparison in filter(_on_loss, summary["comparisons"]):
        ratio = as_number(comparison.get("learning_rate_ratio"))
        if ratio is None:
            continue
        resolution = as_number(comparison.get("ratio_resolution"))
        within = (
            f", known to within a factor of {format_number(resolution, significant=3)} (the coarser grid step)"
            if resolution is not None
            else "; with a single rate in an arm its resolution is unknown"
        )
        sentences.append(
            f"{comparison['arm']}'s best learning rate is {format_number(ratio, significant=3)}× "
            f"{comparison['reference']}'s{within}."
        )
    return sentences


def expected_best_table(summary: dict) -> Table:
    """Trials -> the expected best held-out loss of each arm (Dodge et al. 2019)."""
    arms = list(summary["arms"])
    columns = [Column("trials", "Trials")] + [
        Column(arm, arm, "nats/token", decimals=3, group="Expected best held-out loss") for arm in arms
    ]
    by_arm = {
        arm: {int(p["trials"]): p.get("eval_loss") for p in entry.get("expected_best", [])}
        for arm, entry in summary["arms"].items()
    }
    trials = sorted({n for points in by_arm.values() for n in points})
    rows = [[Cell(str(n))] + [Cell(as_number(by_arm[arm].get(n))) for arm in arms] for n in trials]
    return Table(columns, rows)


def fairness_table(summary: dict) -> Table:
    """A row per setting of the arms' best runs; a differing one says so in words, not by colour alone."""
    arms = list(summary["arms"])
    columns = [Column("key", "Setting"), *[Column(arm, arm, group="Best run of each arm") for arm in arms]]
    columns.append(Column("differs", "Same for all?"))
    rows = []
    for row in summary["fairness"]:
        values = row.get("values") or {}
        cells = [Cell(str(row["key"]))]
        cells += [Cell(setting_text(values[arm], row["key"]) if arm in values else "not set") for arm in arms]
        cells.append(Cell("≠ differs" if row.get("differs") else "same"))
        rows.append(cells)
    return Table(columns, rows)


def setting_text(value, key: str = "") -> str:
    if key.endswith("learning_rate"):
        return learning_rate_text(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return learning_rate_text(value) if 0 < abs(value) < 0.01 else f"{value:g}"  # 3e-4, not 0.0003
    if isinstance(value, (list, tuple)):
        return ", ".join(setting_text(item) for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{key}={setting_text(item)}" for key, item in value.items())
    return str(value)


RUN_COLUMNS = [  # (summary key, label, unit, decimals, significant, group, scale)
    ("eval_loss", "held-out", "nats/token", 3, None, "Loss", 1.0),
    ("final_train_loss", "final training", "nats/token", 3, None, "Loss", 1.0),
    ("train_runtime_s", "Runtime", "s", 1, None, None, 1.0),
    ("train_samples_per_s", "Throughput", "samples/s", None, 3, None, 1.0),
    ("peak_memory_mb", "Peak memory", "MB", 0, None, None, 1.0),
    ("energy_j", "Energy", "kJ", None, 3, None, 1000.0),
    ("tokens_seen", "Tokens seen", "tokens", 0, None, None, 1.0),
    ("flops", "Compute", "FLOP", None, 3, None, 1.0),
]


def runs_table(summary: dict) -> Table:
    """Every run the comparison rests on, by arm and learning rate; the best run of each arm marked."""
    best_runs = {entry.get("best_run") for entry in summary["arms"].values()}
    flop_scale, flop_unit_name = flop_unit([run.get("flops") for run in summary["runs"]])
    spec = [
        (key, label, flop_unit_name, d, s, g, flop_scale) if key == "flops" else (key, label, unit, d, s, g, scale)
        for key, label, unit, d, s, g, scale in RUN_COLUMNS
    ]
    columns = [
        Column("run", "Run"),
        Column("arm", "Arm"),
        Column("learning_rate", "Learning rate"),
        Column("seed", "Seed", decimals=0),
        *[Column(k, label, unit, decimals=d, significant=s, group=g) for k, label, unit, d, s, g, _ in spec],
        Column("best", "Best"),
    ]
    ordered = sorted(
        summary["runs"],
        key=lambda r: (str(r.get("arm")), as_number(r.get("learning_rate")) or 0.0, as_number(r.get("seed")) or 0),
    )
    rows = []
    for run in ordered:
        rows.append(
            [
                Cell(str(run["run"])),
                Cell(run.get("arm")),
                Cell(learning_rate_text(run.get("learning_rate"))),
                Cell(as_number(run.get("seed"))),
                *[Cell(_scaled(run.get(key), scale)) for key, *_, scale in spec],
                Cell(BEST_MARK if run["run"] in best_runs else ""),
            ]
        )
    return Table(columns, rows)


def comparison_table_files(figures_dir: Path | None, report_dir: Path) -> list[str]:
    if figures_dir is None:
        return []
    tables_dir = Path(figures_dir).parent / "tables"
    files = [tables_dir / f"{name}.{ext}" for name in COMPARE_TABLES for ext in ("csv", "tex")]
    return [Path(os.path.relpath(path, report_dir)).as_posix() for path in files if path.is_file()]


def comparison_figures(
    figures_dir: Path | None, report_dir: Path, confidence: str
) -> tuple[list[HtmlFigure], list[str]]:
    """The compare rule's figures embedded as PNG, with links to their PDF and SVG; a sentence per missing one."""
    figures, missing = [], []
    for name, (title, caption) in COMPARE_FIGURES.items():
        png = Path(figures_dir) / f"{name}.png" if figures_dir is not None else None
        if png is None or not png.is_file():
            missing.append(f"No figure “{title}”: the compare rule did not draw {name}.png.")
            continue
        files = [png.with_suffix(suffix) for suffix in (".pdf", ".svg", ".png")]
        links = [Path(os.path.relpath(path, report_dir)).as_posix() for path in files if path.is_file()]
        figures.append(HtmlFigure(name, title, caption.format(confidence=confidence), png_data_uri(png), links))
    return figures, missing


def folds_per_run_detail(run_count: int) -> bool:
    return run_count > MANY_RUNS
