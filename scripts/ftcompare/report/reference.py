"""Published figures (config report.reference, e.g. the blog's) beside this study's, per run."""

from dataclasses import dataclass

from ftcompare.report import costs
from ftcompare.report.inputs import RunResult
from ftcompare.report.numbers import as_number, ratio
from ftcompare.report.table import Cell, Column, Table


@dataclass(frozen=True)
class ReferenceFigure:
    key: str
    label: str
    unit: str
    decimals: int


FIGURES = [
    ReferenceFigure("trainable_params", "Trainable parameters", "count", 0),
    ReferenceFigure("total_params", "All parameters", "count", 0),
    ReferenceFigure("train_steps", "Training steps", "count", 0),
    ReferenceFigure("train_runtime_s", "Training runtime", "s", 1),
    ReferenceFigure("train_samples_per_s", "Throughput", "samples/s", 3),
    ReferenceFigure("final_train_loss", "Final training loss", "nats/token", 3),
    ReferenceFigure("vram_pct", "Peak VRAM used", "% of device", 0),
]


def reference_table(runs: list[RunResult], reference: dict) -> Table | None:
    """Rows are figures, and each run with published figures gets three columns: published,
    this study and the ratio of the two. None when no run has published figures."""
    matched = [run for run in runs if isinstance(reference.get(run.name), dict)]
    if not matched:
        return None
    columns = [Column("figure", "Figure"), Column("unit", "Unit")]
    for run in matched:
        columns += [
            Column(f"{run.name}_published", f"{run.name}: published", decimals=3, group=run.name, short="published"),
            Column(f"{run.name}_this_study", f"{run.name}: this study", decimals=3, group=run.name, short="this study"),
            Column(
                f"{run.name}_ratio",
                f"{run.name}: ratio, this study / published",
                decimals=2,
                group=run.name,
                short="ratio",
            ),
        ]
    rows = []
    for figure in FIGURES:
        row = [Cell(figure.label), Cell(figure.unit)]
        for run in matched:
            published = as_number(reference[run.name].get(figure.key))
            ours = _this_study(run, figure.key)
            row += [
                Cell(published, decimals=figure.decimals),
                Cell(ours, decimals=figure.decimals),
                Cell(ratio(ours, published), decimals=2),
            ]
        rows.append(row)
    return Table(columns=columns, rows=rows, notes=_notes(runs, matched, reference))


def _this_study(run: RunResult, key: str):
    if key == "vram_pct":
        return costs.device_memory_fraction_pct(run)
    return getattr(run.metrics, key)


def _hardware(run: RunResult) -> str | None:
    names = run.telemetry.device_names or ([run.metrics.device_name] if run.metrics.device_name else [])
    if not names:
        return run.metrics.device
    return ", ".join(names)


def _notes(runs: list[RunResult], matched: list[RunResult], reference: dict) -> list[str]:
    sources = sorted({str(reference[run.name]["source"]) for run in matched if reference[run.name].get("source")})
    notes = []
    if sources:
        notes.append("Published figures: " + "; ".join(sources) + ".")
    for run in matched:
        published = reference[run.name].get("hardware") or "not stated"
        ours = _hardware(run) or "unknown"
        notes.append(f"Hardware for {run.name}: published on {published}; this study on {ours}.")
    notes.append("Ratio: this study's figure divided by the published one.")
    notes.append(
        "Peak VRAM used: the published figure is a snapshot of the device's memory use during "
        "training; this study's is the highest VRAM used over the sampled telemetry, as % of the "
        "device's total."
    )
    names = {run.name for run in runs}
    unmatched = [name for name in reference if name not in names]
    if unmatched:
        notes.append("Published figures for " + ", ".join(unmatched) + " have no run of that name here.")
    return notes
