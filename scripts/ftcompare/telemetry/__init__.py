"""GPU and process telemetry sampled over a whole job (amdsmi, NVML, torch, psutil); see docs/telemetry.md.

from ftcompare.telemetry import TelemetrySampler, peak_memory
with TelemetrySampler(csv_path, json_path, backend="auto", interval_s=0.5, job="train lora") as sampler:
    sampler.set_phase("load"); ...; sampler.set_phase("train"); ...; sampler.set_phase("save")
mb, source = peak_memory(sampler.summary)
"""

from ftcompare.telemetry.memory import memory_figures, peak_memory, peak_of
from ftcompare.telemetry.sampler import TelemetrySampler
from ftcompare.telemetry.schema import CSV_COLUMNS
from ftcompare.telemetry.selection import CHOICES as BACKENDS

__all__ = ["BACKENDS", "CSV_COLUMNS", "TelemetrySampler", "memory_figures", "peak_memory", "peak_of"]
