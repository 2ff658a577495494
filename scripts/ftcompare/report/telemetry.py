"""One job's telemetry: the summary JSON and the sampled CSV, read tolerantly.

The telemetry writers differ by backend (amdsmi, nvml, torch, cpu): any key or column may be
missing and any value null. Everything here answers "absent" rather than failing.
"""

from dataclasses import dataclass, field

import pandas as pd

from ftcompare.report.numbers import as_number

SAMPLE_COLUMNS = [
    "time_s",
    "phase",
    "device",
    "backend",
    "vram_used_mb",
    "vram_total_mb",
    "process_vram_mb",
    "torch_allocated_mb",
    "torch_reserved_mb",
    "util_pct",
    "mem_util_pct",
    "power_w",
    "temp_c",
    "energy_j",
    "rss_mb",
    "cpu_pct",
]
TEXT_COLUMNS = {"phase", "device", "backend"}


@dataclass(frozen=True)
class PhaseSpan:
    phase: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Peak:
    value: float
    device: str


@dataclass(frozen=True)
class Telemetry:
    summary: dict = field(default_factory=dict)
    samples: pd.DataFrame = field(default_factory=lambda: empty_samples())

    @property
    def backend(self) -> str | None:
        backend = self.summary.get("backend")
        if isinstance(backend, str) and backend:
            return backend
        known = self.samples["backend"].dropna().unique() if len(self.samples) else []
        return str(known[0]) if len(known) else None

    @property
    def driver_version(self) -> str | None:
        version = self.summary.get("driver_version")
        return str(version) if version not in (None, "") else None

    @property
    def device_names(self) -> list[str]:
        names = []
        for device in self.summary.get("devices") or []:
            if isinstance(device, dict):
                label = device.get("name") or device.get("device")
                if label and str(label) not in names:
                    names.append(str(label))
        return names

    def peak(self, column: str) -> Peak | None:
        """The highest value of `column` over the devices in the summary's `peaks`."""
        best = None
        peaks = self.summary.get("peaks")
        for device, values in peaks.items() if isinstance(peaks, dict) else []:
            value = as_number(values.get(column)) if isinstance(values, dict) else None
            if value is not None and (best is None or value > best.value):
                best = Peak(float(value), str(device))
        return best

    def peak_origin(self, peak: Peak) -> str:
        """Where a peak came from, for a table's source line: "telemetry peak, amdsmi, cuda:0"."""
        return ", ".join(dict.fromkeys(part for part in ("telemetry peak", self.backend, peak.device) if part))

    def peak_on(self, device: str, column: str) -> float | None:
        peaks = self.summary.get("peaks")
        values = peaks.get(device) if isinstance(peaks, dict) else None
        return as_number(values.get(column)) if isinstance(values, dict) else None

    @property
    def energy_j(self) -> float | None:
        """Energy summed over devices, or None when no device reported any."""
        energy = self.summary.get("energy_j")
        values = [as_number(v) for v in energy.values()] if isinstance(energy, dict) else []
        values = [v for v in values if v is not None]
        return float(sum(values)) if values else None

    @property
    def energy_method(self) -> str | None:
        method = self.summary.get("energy_method")
        return str(method) if method else None

    def has_series(self, column: str) -> bool:
        return column in self.samples and self.samples[column].notna().any()

    def phase_spans(self) -> list[PhaseSpan]:
        """Consecutive samples of one phase joined into spans; a span ends where the next begins."""
        if not len(self.samples) or self.samples["phase"].isna().all():
            return []
        timeline = self.samples.dropna(subset=["time_s", "phase"]).drop_duplicates("time_s").sort_values("time_s")
        spans: list[PhaseSpan] = []
        for time_s, phase in zip(timeline["time_s"], timeline["phase"]):
            if spans and spans[-1].phase == phase:
                spans[-1] = PhaseSpan(phase, spans[-1].start_s, float(time_s))
                continue
            if spans:
                spans[-1] = PhaseSpan(spans[-1].phase, spans[-1].start_s, float(time_s))
            spans.append(PhaseSpan(str(phase), float(time_s), float(time_s)))
        return spans


def empty_samples() -> pd.DataFrame:
    return normalise_samples(pd.DataFrame())


def normalise_samples(frame: pd.DataFrame) -> pd.DataFrame:
    """Every known column present (empty when the backend had none), numbers as floats."""
    frame = frame.copy()
    for column in SAMPLE_COLUMNS:
        if column not in frame:
            frame[column] = pd.Series(dtype="object" if column in TEXT_COLUMNS else "float64")
        elif column in TEXT_COLUMNS:
            frame[column] = frame[column].map(lambda v: None if pd.isna(v) else str(v)).astype("object")
        else:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame
