"""telemetry.json: what the samples add up to per device, and how each figure was obtained."""

import statistics

from ftcompare.telemetry.energy import account_energy
from ftcompare.telemetry.memory import memory_figures
from ftcompare.telemetry.schema import FIGURES, SCHEMA_VERSION, UNITS

# Cumulative, so its peak is its total and its mean means nothing; reported as energy_j instead.
_NOT_SUMMARISED = ("energy_j",)


def _round(value, digits=3):
    return round(value, digits) if isinstance(value, float) else value


def phase_segments(phases, duration_s):
    """[(start, name)] marks -> segments with their end and duration."""
    segments = []
    for i, (start, name) in enumerate(phases):
        end = phases[i + 1][0] if i + 1 < len(phases) else duration_s
        segments.append(
            {"phase": name, "start_s": _round(start), "end_s": _round(end), "duration_s": _round(max(0.0, end - start))}
        )
    return segments


def fill_energy(rows, slots, vendor, read_log) -> dict:
    """Put energy_j into each GPU row; returns {label: Energy} for the summary."""
    results = {}
    for slot in slots:
        if slot.kind != "gpu" or slot.vendor_device is None:
            continue
        own = [row for row in rows if row["device"] == slot.label]
        energy = account_energy(
            [row["time_s"] for row in own],
            [row.get("power_w") for row in own],
            [row.get("energy_counter_j") for row in own],
            vendor.energy_counter,
            counter_missing_reason=read_log.reason(slot.label, "energy_j"),
        )
        for row, value in zip(own, energy.cumulative_j):
            row["energy_j"] = value
        results[slot.label] = energy
    return results


def build_summary(
    *,
    job,
    active,
    rows,
    phases,
    started_at,
    duration_s,
    interval_s,
    sample_times,
    sample_costs_s,
    read_log,
    torch_peaks,
    peaks_reset,
    job_error,
    thread_stopped,
    setup_s,
    job_devices=None,
) -> dict:
    """The summary dict; also fills energy_j into `rows` (the GPU rows of telemetry.csv)."""
    energies = fill_energy(rows, active.slots, active.vendor, read_log) if active.vendor is not None else {}
    segments = phase_segments(phases, duration_s)
    phase_durations = {}
    for segment in segments:
        phase_durations[segment["phase"]] = _round(phase_durations.get(segment["phase"], 0.0) + segment["duration_s"])
    gaps = [b - a for a, b in zip(sample_times, sample_times[1:])]
    errors = read_log.as_dict()
    device_entries = {}
    driver_version = None
    for slot in active.slots:
        entry = _device_entry(
            slot,
            active,
            rows,
            errors.get(slot.label, {}),
            energies.get(slot.label),
            torch_peaks.get(slot.label),
            peaks_reset,
        )
        device_entries[slot.label] = entry
        driver_version = driver_version or entry.get("driver_version")
    gpu_energy = [e for e in energies.values() if e.total_j is not None]
    summary = {
        "schema": SCHEMA_VERSION,
        "job": job,
        "backend": active.primary,
        "backend_requested": active.requested,
        "backends_used": [b.name for b in (active.vendor, active.torch, active.cpu) if b is not None],
        "backend_reasons": dict(active.reasons),
        "job_devices": job_devices,
        "device_mapping": active.mapping,
        "device_names": {label: entry["name"] for label, entry in device_entries.items()},
        "driver_version": driver_version,
        "library_version": getattr(active.vendor, "library_version", None),
        "started_at": started_at,
        "backend_setup_s": _round(setup_s),
        "duration_s": _round(duration_s),
        "interval_s": interval_s,
        "achieved_interval_s": _round(statistics.median(gaps), 4) if gaps else None,
        "sample_count": len(sample_times),
        "sampling_cost_ms": _sampling_cost(sample_costs_s),
        "phases": segments,
        "phase_durations_s": phase_durations,
        "devices": device_entries,
        "energy_j": _round(sum(e.total_j for e in gpu_energy)) if gpu_energy else None,
        "energy_method": _energy_method(energies),
        "read_errors": errors,
        "job_failed": job_error,
        "sampler_stopped_cleanly": thread_stopped,
    }
    summary["memory_figures"] = memory_figures(summary)
    return summary


def _sampling_cost(costs):
    """Wall time and the sampling thread's own CPU time per sample, in ms."""
    if not costs:
        return None
    wall, cpu = [w for w, _ in costs], [c for _, c in costs]
    return {
        "mean": _round(1000 * statistics.fmean(wall)),
        "max": _round(1000 * max(wall)),
        "cpu_mean": _round(1000 * statistics.fmean(cpu)),
    }


def _device_entry(slot, active, rows, errors, energy, peaks, peaks_reset):
    own = [row for row in rows if row["device"] == slot.label]
    sources = {}
    entry = {"kind": slot.kind, "name": slot.name, "backends": list(slot.backends)}
    if slot.vendor_device is not None:
        device = slot.vendor_device
        entry.update(
            {
                "vendor_index": device.index,
                "pci_bus_id": device.pci_bus_id,
                "uuid": device.uuid,
                "driver_version": slot.driver_version,
            }
        )
        sources.update(active.vendor.sources(device))
    if slot.torch_ordinal is not None:
        torch_sources = active.torch.sources(slot.torch_ordinal)
        for column, text in torch_sources.items():
            if column.startswith("torch_") or slot.vendor_device is None:
                sources.setdefault(column, text)
    if slot.kind == "process":
        sources.update(active.cpu.sources())
    entry["notes"] = list(slot.notes)
    figures, missing = {}, {}
    for column in FIGURES:
        if column in _NOT_SUMMARISED or column not in sources:
            continue
        stats = _stats([row.get(column) for row in own])
        if stats is None:
            missing[column] = errors.get(column, {}).get("first", "not reported")
            continue
        by_phase = {}
        for phase in dict.fromkeys(row["phase"] for row in own):
            phase_stats = _stats([row.get(column) for row in own if row["phase"] == phase])
            if phase_stats is not None:
                by_phase[phase] = {"peak": phase_stats["peak"], "mean": phase_stats["mean"]}
        figures[column] = {**stats, "unit": UNITS[column], "by_phase": by_phase}
    entry["figures"] = figures
    entry["missing_figures"] = missing
    entry["sources"] = {column: text for column, text in sources.items() if column in figures}
    if peaks:
        entry.update({key: _round(value) for key, value in peaks.items()})
        entry["torch_peaks_since"] = (
            f"reset_peaks() at {peaks_reset[0]:.1f} s (phase {peaks_reset[1]})" if peaks_reset else "job start"
        )
    if energy is not None:
        entry["energy_j"] = _round(energy.total_j)
        entry["energy_method"] = energy.method
    return entry


def _stats(values):
    numbers = [v for v in values if v is not None]
    if not numbers:
        return None
    return {"peak": _round(max(numbers)), "mean": _round(statistics.fmean(numbers)), "samples": len(numbers)}


def _energy_method(energies):
    methods = {label: energy.method for label, energy in energies.items()}
    if not methods:
        return "not measured: no vendor GPU library (energy needs amdsmi or NVML)"
    if len(methods) == 1:
        return next(iter(methods.values()))
    if len(set(methods.values())) == 1:
        return f"sum over {', '.join(methods)}, each: {next(iter(methods.values()))}"
    return f"sum over {', '.join(methods)}: " + "; ".join(f"{label}: {method}" for label, method in methods.items())
