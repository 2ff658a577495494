"""Run a TelemetrySampler briefly and read back what it wrote."""

import csv
import json
import time

from ftcompare.telemetry import TelemetrySampler


def run_sampler(tmp_path, backend, seconds=0.25, interval_s=0.05, environ=None, phases=("load", "train"), **kwargs):
    csv_path, json_path = tmp_path / "telemetry.csv", tmp_path / "telemetry.json"
    kwargs.setdefault("kfd_root", tmp_path / "no-kfd")
    with TelemetrySampler(
        csv_path,
        json_path,
        backend=backend,
        interval_s=interval_s,
        job="test job",
        environ={} if environ is None else environ,
        **kwargs,
    ) as sampler:
        for phase in phases:
            sampler.set_phase(phase)
            time.sleep(seconds / len(phases))
    return read_outputs(tmp_path), sampler


def read_outputs(tmp_path):
    with open(tmp_path / "telemetry.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return rows, json.loads((tmp_path / "telemetry.json").read_text(encoding="utf-8"))


def device_rows(rows, device):
    return [row for row in rows if row["device"] == device]
