"""The summary's tables, each as CSV and booktabs LaTeX (ftcompare.report.table and .latex), so that the
numbers of summary.json can go into a paper as they are."""

from pathlib import Path

from ftcompare.compare.measures import MEASURE_BY_KEY, MEASURES, rate_text
from ftcompare.report.latex import table_to_latex
from ftcompare.report.table import Cell, Column, Table, table_to_csv

TABLE_NAMES = ("learning_rates", "at_best", "comparisons", "fairness", "expected_best")
_STAT = [
    Column("mean", "Mean", significant=4),
    Column("ci_low", "CI low", significant=4, group="interval"),
    Column("ci_high", "CI high", significant=4, group="interval"),
    Column("std", "Std", significant=3),
]


def learning_rates_table(summary: dict) -> Table:
    columns = [
        Column("arm", "Arm"),
        Column("learning_rate", "Learning rate"),
        Column("n", "Seeds", decimals=0),
        *[_with_unit(column, "nats", "eval_loss_") for column in _STAT],
        Column("best", "Best"),
    ]
    rows = []
    for name, arm in summary["arms"].items():
        for entry in arm["learning_rates"]:
            stat = entry["eval_loss"]
            best = "best" if entry["learning_rate"] == arm["best_learning_rate"] else ""
            rows.append(
                [Cell(name), Cell(rate_text(entry["learning_rate"])), Cell(stat["n"]), *_stat_cells(stat), Cell(best)]
            )
    return Table(columns, rows, notes=[_interval_note(summary)])


def at_best_table(summary: dict) -> Table:
    columns = [
        Column("arm", "Arm"),
        Column("learning_rate", "Learning rate"),
        Column("metric", "Figure"),
        Column("unit", "Unit"),
        Column("n", "Seeds", decimals=0),
        *_STAT,
    ]
    rows = []
    for name, arm in summary["arms"].items():
        for measure in MEASURES:
            stat = arm["at_best"][measure.key]
            rows.append(
                [
                    Cell(name),
                    Cell(rate_text(arm["best_learning_rate"])),
                    Cell(measure.key),
                    Cell(measure.unit),
                    Cell(stat["n"]),
                    *_stat_cells(stat),
                ]
            )
    return Table(columns, rows, notes=[_interval_note(summary)])


def comparisons_table(summary: dict) -> Table:
    columns = [
        Column("arm", "Arm"),
        Column("reference", "Reference"),
        Column("metric", "Figure"),
        Column("unit", "Unit"),
        Column("n_arm", "Seeds (arm)", decimals=0),
        Column("n_reference", "Seeds (ref.)", decimals=0),
        Column("difference", "Difference", significant=4),
        Column("ci_low", "CI low", significant=4, group="interval"),
        Column("ci_high", "CI high", significant=4, group="interval"),
        Column("welch_t", "Welch t", significant=4),
        Column("welch_df", "df", significant=3),
        Column("p", "p", significant=3),
        Column("learning_rate_ratio", "Rate ratio", significant=3),
        Column("ratio_resolution", "Ratio within ×", significant=3),
        Column("verdict", "Verdict"),
    ]
    rows = []
    for comparison in summary["comparisons"]:
        difference, welch = comparison["difference"], comparison["welch"]
        rows.append(
            [
                Cell(comparison["arm"]),
                Cell(comparison["reference"]),
                Cell(comparison["metric"]),
                Cell(MEASURE_BY_KEY[comparison["metric"]].unit),
                Cell(comparison["n"][0]),
                Cell(comparison["n"][1]),
                Cell(difference["mean"]),
                Cell(difference["ci_low"]),
                Cell(difference["ci_high"]),
                Cell(welch["t"]),
                Cell(welch["df"]),
                Cell(welch["p"]),
                Cell(comparison["learning_rate_ratio"]),
                Cell(comparison["ratio_resolution"]),
                Cell(comparison["verdict"]),
            ]
        )
    notes = ["Difference: the arm's mean minus the reference's, at each arm's best learning rate; Welch's t-test."]
    return Table(columns, rows, notes=notes + [_interval_note(summary)])


def fairness_table(summary: dict) -> Table:
    arms = list(summary["arms"])
    columns = [Column("key", "Setting"), Column("differs", "Differs"), *[Column(arm, arm) for arm in arms]]
    rows = []
    for row in summary["fairness"]:
        values = [Cell(_setting_text(row["values"][arm]) if arm in row["values"] else None) for arm in arms]
        rows.append([Cell(row["key"]), Cell("yes" if row["differs"] else "no"), *values])
    notes = [
        "Each arm's best run, as it trained. Differs: the arms that have the setting do not agree on it "
        "(the tuned learning rate and the keys that define the arms aside)."
    ]
    return Table(columns, rows, notes=notes)


def expected_best_table(summary: dict) -> Table:
    columns = [
        Column("arm", "Arm"),
        Column("trials", "Trials", decimals=0),
        Column("expected_best_eval_loss", "Expected best held-out loss", unit="nats", significant=4),
    ]
    rows = [
        [Cell(name), Cell(point["trials"]), Cell(point["eval_loss"])]
        for name, arm in summary["arms"].items()
        for point in arm["expected_best"]
    ]
    notes = ["Dodge et al. 2019: the expected lowest of n runs drawn with replacement from the arm's runs."]
    return Table(columns, rows, notes=notes)


BUILDERS = {
    "learning_rates": (learning_rates_table, "Held-out loss per arm and learning rate, over seeds"),
    "at_best": (at_best_table, "Each arm at its best learning rate, over seeds"),
    "comparisons": (comparisons_table, "Each arm against the reference arm at their best learning rates"),
    "fairness": (fairness_table, "The effective settings of each arm's best run"),
    "expected_best": (expected_best_table, "Expected best held-out loss against the number of trials"),
}


def write_tables(summary: dict, folder: Path) -> list[Path]:
    """Every table as <name>.csv and <name>.tex in `folder` (which exists)."""
    written = []
    for name in TABLE_NAMES:
        build, caption = BUILDERS[name]
        table = build(summary)
        csv_path, tex_path = folder / f"{name}.csv", folder / f"{name}.tex"
        csv_path.write_text(table_to_csv(table), encoding="utf-8")
        tex_path.write_text(table_to_latex(table, caption, f"tab:compare-{name}"), encoding="utf-8")
        written += [csv_path, tex_path]
    return written


def _with_unit(column: Column, unit: str, prefix: str) -> Column:
    return Column(prefix + column.key, column.label, unit=unit, significant=column.significant, group=column.group)


def _stat_cells(stat: dict) -> list[Cell]:
    return [Cell(stat["mean"]), Cell(stat["ci_low"]), Cell(stat["ci_high"]), Cell(stat["std"])]


def _interval_note(summary: dict) -> str:
    level = f"{summary['confidence'] * 100:g}%"
    return f"CI: the {level} t-interval over seeds; none with one seed."


def _setting_text(value) -> object:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return str(value)
    return value
