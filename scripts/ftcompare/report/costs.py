"""What a run cost: its peak memory (allocator and device-wide) and energy, each with where the
figure came from, and which run the ratios are taken against.

metrics.json is preferred; the telemetry summary fills in what the trainer left null.
"""

from dataclasses import dataclass

from ftcompare.report.inputs import RunResult
from ftcompare.report.table import Cell, Column, Table

MEMORY_FIGURE_LABELS = {
    "device_vram_used_mb": "device-wide VRAM used",
    "process_vram_mb": "process VRAM",
    "torch_max_allocated_mb": "torch max allocated",
    "torch_max_reserved_mb": "torch max reserved",
    "rss_mb": "process RSS",
}


@dataclass(frozen=True)
class Measured:
    value: float
    kind: str  # what was measured: "VRAM used", "process RSS", …
    origin: str | None  # where the figure came from: the trainer's source or the telemetry

    @property
    def source(self) -> str:
        return f"{self.kind} ({self.origin})" if self.origin else self.kind

    def comparable_with(self, other: "Measured") -> bool:
        return self.kind == other.kind


def memory_figure_label(name: str) -> str:
    return MEMORY_FIGURE_LABELS.get(name, name.removesuffix("_mb").replace("_", " "))


def allocator_peak(run: RunResult) -> Measured | None:
    """torch's max_memory_allocated (reset before training)."""
    return _from_metrics(run, "torch_max_allocated_mb", "torch max allocated") or _from_telemetry(
        run, "torch_allocated_mb", "torch allocated"
    )


def device_memory_peak(run: RunResult) -> Measured | None:
    """Device-wide VRAM used at its peak; on a CPU run the process RSS stands in, labelled so."""
    measured = (
        _from_metrics(run, "device_vram_used_mb", "VRAM used")
        or _from_telemetry(run, "vram_used_mb", "VRAM used")
        or _from_metrics(run, "rss_mb", "process RSS")
        or _from_telemetry(run, "rss_mb", "process RSS")
    )
    if measured is None and run.metrics.peak_memory_mb is not None:
        return Measured(run.metrics.peak_memory_mb, "peak memory", run.metrics.peak_memory_source)
    return measured


def _from_metrics(run: RunResult, name: str, kind: str) -> Measured | None:
    """metrics.json's memory figure `name`, if the trainer measured it."""
    figure = run.metrics.memory_value(name)
    return None if figure is None else Measured(figure.value, kind, figure.source)


def _from_telemetry(run: RunResult, column: str, kind: str) -> Measured | None:
    """The telemetry's peak of `column`, if it sampled one."""
    peak = run.telemetry.peak(column)
    return None if peak is None else Measured(peak.value, kind, run.telemetry.peak_origin(peak))


def device_memory_fraction_pct(run: RunResult) -> float | None:
    """Peak VRAM used as % of the device's capacity (the blog's rocm-smi figure)."""
    best = None
    peaks = run.telemetry.summary.get("peaks")
    for device in peaks if isinstance(peaks, dict) else {}:
        used = run.telemetry.peak_on(device, "vram_used_mb")
        total = run.telemetry.peak_on(device, "vram_total_mb")
        if used is not None and total:
            pct = 100.0 * used / total
            best = pct if best is None else max(best, pct)
    return best


def energy(run: RunResult) -> Measured | None:
    if run.metrics.energy_j is not None:
        return Measured(run.metrics.energy_j, "energy", run.metrics.energy_source)
    total = run.telemetry.energy_j
    if total is not None:
        method = run.telemetry.energy_method
        return Measured(total, "energy", f"telemetry{', ' + method if method else ''}")
    return None


def full_fine_tune(runs: list[RunResult]) -> RunResult | None:
    """The run ratios are taken against: the one named `full` if it is a full fine-tune, else the
    first full fine-tune; None when no run is one."""
    full_runs = [run for run in runs if run.method == "full"]
    named = [run for run in full_runs if run.name == "full"]
    return (named or full_runs or [None])[0]


def memory_energy_table(runs: list[RunResult]) -> Table:
    """Every memory figure each run's trainer recorded, and its energy, each with its source."""
    names = list(dict.fromkeys(name for run in runs for name in run.metrics.memory))
    columns = [Column("model", "Model"), Column("device", "Device")]
    columns += [Column(name, memory_figure_label(name), "MB", decimals=0, with_source=True) for name in names]
    columns.append(Column("energy_j", "Energy", "J", decimals=0, with_source=True))
    rows = []
    for run in runs:
        row = [Cell(run.name), Cell(run.metrics.device_name or run.metrics.device)]
        for name in names:
            figure = run.metrics.memory.get(name)
            row.append(Cell(figure.value, figure.source) if figure and figure.value is not None else Cell())
        measured = energy(run)
        row.append(Cell(measured.value, measured.origin) if measured else Cell())
        rows.append(row)
    return Table(
        columns=columns,
        rows=rows,
        notes=["As recorded in each run's metrics.json; energy falls back to the telemetry summary."],
    )
