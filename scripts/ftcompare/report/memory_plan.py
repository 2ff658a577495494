"""The memory plan beside what each run measured: planned bytes per device (results/plan/plan.json, made
from the config before any job) and the peak the run's allocator reached."""

import re

from ftcompare.report import costs
from ftcompare.report.headline import method_name
from ftcompare.report.inputs import RunResult
from ftcompare.report.numbers import ratio
from ftcompare.report.table import Cell, Column, Table

GIB = 2**30
PLANNED = (
    ("weights", "Weights"),
    ("gradients", "Gradients"),
    ("optimizer_states", "Optimizer states"),
    ("autocast_copies", "Autocast copies"),
    ("activations", "Activations"),
)
VERDICT_MEANINGS = (
    "fits: within 90% of the device's memory",
    "tight: within the device, in the last 10% the plan leaves to the runtime",
    "paged: only with the paged optimizer's states moved to host memory (slow)",
    "does not fit: a train job on such a device stops before loading the model",
)


def memory_plan_table(runs: list[RunResult], plan: dict) -> Table:
    devices = _devices(plan)
    columns = [Column("model", "Model"), Column("method", "Method")]
    columns += [
        Column(f"planned_{key}_gb", label, "GB", decimals=2, group="Planned per device", short=label.split()[0].lower())
        for key, label in PLANNED
    ]
    columns += [
        Column("planned_gb", "Planned peak", "GB", decimals=2, group="Planned per device", short="total"),
        Column("measured_gb", "Measured peak", "GB", decimals=2, with_source=True, group="Measured", short="peak"),
        Column("measured_vs_planned", "Measured / planned", "×", decimals=2, group="Measured", short="÷ planned"),
    ]
    columns += [
        Column(fits_key(name, gb), f"Fits {name} ({gb:g} GB)", group="Fits one device", short=f"{gb:g} GB")
        for name, gb in devices
    ]
    rows = []
    for run in runs:
        entry = plan.get("runs", {}).get(run.name, {})
        sizes = entry.get("bytes") or {}
        planned = entry.get("per_device_bytes")
        measured = costs.allocator_peak(run) or costs.device_memory_peak(run)
        measured_gb = measured.value / 1024 if measured else None
        row = [Cell(run.name), Cell(method_name(run.metrics.method))]
        row += [Cell(_gb(sizes.get(key))) for key, _ in PLANNED]
        # Only the allocator's peak counts what the plan counts: tensors.
        comparable = measured is not None and _is_allocator(measured) and planned
        row += [
            Cell(_gb(planned)),
            Cell(measured_gb, measured.source) if measured else Cell(),
            Cell(ratio(measured.value * 2**20, planned)) if comparable else Cell(),
        ]
        verdicts = {f["device"]: f["verdict"] for f in entry.get("fits", [])}
        row += [Cell(verdicts.get(name)) for name, _ in devices]
        rows.append(row)
    return Table(columns=columns, rows=rows, notes=_notes(plan))


def fits_key(device: str, memory_gb: float) -> str:
    """The CSV column of a device's verdict: fits_mi250_gcd_64gb, fits_plan_device_memory_gb_80gb, ..."""
    return f"fits_{re.sub(r'[^a-z0-9]+', '_', device.lower()).strip('_')}_{memory_gb:g}gb".replace(".", "_")


def _devices(plan: dict) -> list[tuple[str, float]]:
    """The devices the plan judged, in its order: the configured one first, then the common ones."""
    seen = {}
    for entry in plan.get("runs", {}).values():
        for fit in entry.get("fits", []):
            seen.setdefault(fit["device"], fit["memory_gb"])
    return list(seen.items())


def _is_allocator(measured: costs.Measured) -> bool:
    return measured.kind.startswith("torch")


def _gb(value) -> float | None:
    return None if value is None else value / GIB


def _notes(plan: dict) -> list[str]:
    notes = [
        "Planned from the config alone before any job ran (results/plan/plan.json; docs/plan.md gives each "
        "formula and its source), per device, for a batch of per_device_train_batch_size rows of "
        "max_seq_length tokens: the longest a batch can be. Grouped by length, most batches are shorter.",
        "Measured: torch's peak allocated memory during training, which counts what the plan counts (tensors); "
        "on a CPU run, where torch keeps no such count, the process's resident memory stands in, which also "
        "holds Python and its libraries, and no ratio is given. GB means 2^30 bytes.",
        "; ".join(VERDICT_MEANINGS) + ".",
    ]
    unknown = [entry["run"] for entry in plan.get("runs", {}).values() if entry.get("status") != "planned"]
    if unknown:
        notes.append(
            f"No plan for {', '.join(unknown)}: "
            + "; ".join(
                f"{entry['run']}: {entry.get('why')}" for entry in plan["runs"].values() if entry["run"] in unknown
            )
        )
    return notes
