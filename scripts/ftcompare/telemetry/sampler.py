"""TelemetrySampler: a background thread that samples every device over a job and, however the job
ends, writes telemetry.csv and telemetry.json."""

import csv
import logging
import os
import threading
import time
from datetime import UTC, datetime

from ftcompare.atomic import atomic_path, write_json
from ftcompare.telemetry import devices
from ftcompare.telemetry.reading import ReadLog, describe_error
from ftcompare.telemetry.schema import CSV_COLUMNS
from ftcompare.telemetry.selection import log_choice, open_backends
from ftcompare.telemetry.summary import build_summary

log = logging.getLogger("ftcompare.telemetry")

INITIAL_PHASE = "start"


class TelemetrySampler:
    """Samples from `with` to the end of the block, phases marked by set_phase().

        with TelemetrySampler(csv_path, json_path, backend="auto", interval_s=0.5, job="train lora") as s:
            s.set_phase("load"); ...; s.set_phase("train"); ...
        s.summary  # the dict written to json_path

    On exit, also when the block raised: the thread is stopped (never waited on for more than
    `stop_timeout_s`), one last sample is taken, and both files are written atomically.
    """

    def __init__(
        self,
        csv_path,
        json_path,
        backend: str = "auto",
        interval_s: float = 0.5,
        job: str = "",
        *,
        environ=None,
        job_devices=None,
        kfd_root=devices.KFD_NODES,
        stop_timeout_s: float = 5.0,
    ):
        if not interval_s or interval_s <= 0:
            raise ValueError(f"telemetry interval_s must be positive, got {interval_s!r}")
        self.csv_path, self.json_path = csv_path, json_path
        self.backend, self.interval_s, self.job = backend, float(interval_s), job
        self._environ = os.environ if environ is None else environ
        self._job_devices = job_devices
        self._kfd_root = kfd_root
        self._stop_timeout_s = stop_timeout_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._rows, self._sample_times, self._sample_costs = [], [], []  # costs: (wall s, thread CPU s)
        self._phases = [(0.0, INITIAL_PHASE)]
        self._phase_marked = False
        self._peaks_reset = None
        self._read_log = ReadLog()
        self._thread = None
        self._active = None
        self._summary = None

    @property
    def summary(self) -> dict:
        if self._summary is None:
            raise RuntimeError("the telemetry summary exists once the sampler's `with` block has ended")
        return self._summary

    def __enter__(self):
        if self._active is not None:
            raise RuntimeError("a TelemetrySampler runs once")
        self._started_at = datetime.now(UTC).isoformat(timespec="seconds")
        opening = time.monotonic()
        self._active = open_backends(self.backend, self._environ, self._kfd_root)
        log_choice(self._active, self.job)
        if self._active.torch is not None:
            self._reset_torch_peaks()
        # time_s counts from here: opening the libraries (torch's import, amdsmi_init) is not the job's.
        self._t0 = time.monotonic()
        self._setup_s = self._t0 - opening
        if self._active.slots:
            self._thread = threading.Thread(target=self._run, name="ftcompare-telemetry", daemon=True)
            self._thread.start()
        return self

    def set_phase(self, phase: str) -> None:
        now = self._elapsed()
        with self._lock:
            if not self._phase_marked and now < self.interval_s:
                # Marked right after start: the samples so far belong to this first phase.
                self._phases = [(0.0, phase)]
                for row in self._rows:
                    row["phase"] = phase
            elif phase != self._phases[-1][1]:
                self._phases.append((now, phase))
            self._phase_marked = True

    def reset_peaks(self) -> None:
        """Restart torch's peak counters (max_memory_allocated/reserved), e.g. right before training."""
        if self._active is not None and self._active.torch is not None:
            self._reset_torch_peaks()
            self._peaks_reset = (self._elapsed(), self._phases[-1][1])

    def __exit__(self, exc_type, exc, traceback):
        duration_s = self._elapsed()
        stopped = self._stop_thread()
        torch_peaks = self._torch_peaks()
        job_error = describe_error(exc) if exc is not None else None
        try:
            with self._lock:
                rows = [dict(row) for row in self._rows]
                sample_times, sample_costs = list(self._sample_times), list(self._sample_costs)
                phases = list(self._phases)
            duration_s = max([duration_s] + sample_times)  # the final sample comes just after the job's end
            self._summary = build_summary(
                job=self.job,
                active=self._active,
                rows=rows,
                phases=phases,
                started_at=self._started_at,
                duration_s=duration_s,
                interval_s=self.interval_s,
                sample_times=sample_times,
                sample_costs_s=sample_costs,
                read_log=self._read_log,
                torch_peaks=torch_peaks,
                peaks_reset=self._peaks_reset,
                job_error=job_error,
                thread_stopped=stopped,
                setup_s=self._setup_s,
                job_devices=self._job_devices,
            )
            self._write_csv(rows)
            write_json(self.json_path, self._summary)
            log.info("telemetry: %d samples over %.1f s written to %s", len(sample_times), duration_s, self.csv_path)
        except Exception:
            if exc is None:
                raise
            log.exception("telemetry: writing %s failed while the job was failing", self.csv_path)
        finally:
            if stopped:
                self._active.close()
        return False

    def _elapsed(self) -> float:
        return time.monotonic() - self._t0

    def _reset_torch_peaks(self) -> None:
        try:
            self._active.torch.reset_peaks()
        except Exception as error:
            log.warning("telemetry: torch.cuda.reset_peak_memory_stats failed: %s", describe_error(error))

    def _torch_peaks(self) -> dict:
        torch, peaks = self._active.torch, {}
        if torch is None:
            return peaks
        for slot in self._active.slots:
            if slot.torch_ordinal is None:
                continue
            try:
                peaks[slot.label] = torch.peaks(slot.torch_ordinal)
            except Exception as error:
                log.warning("telemetry: torch peak memory of %s not read: %s", slot.label, describe_error(error))
        return peaks

    def _stop_thread(self) -> bool:
        if self._thread is None:
            return True
        self._stop.set()
        self._thread.join(self._stop_timeout_s)
        if self._thread.is_alive():
            log.warning(
                "telemetry: the sampling thread did not stop within %.1f s (a vendor library call is "
                "stuck); writing the samples taken so far without a final one",
                self._stop_timeout_s,
            )
            return False
        return True

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            self._sample_safely()
            next_tick += self.interval_s
            now = time.monotonic()
            if next_tick < now:  # a slow sample: skip the missed ticks rather than catch up in a burst
                next_tick += self.interval_s * (int((now - next_tick) / self.interval_s) + 1)
            self._stop.wait(next_tick - now)
        self._sample_safely()  # the final sample, after the job's end

    def _sample_safely(self) -> None:
        try:
            self._sample()
        except Exception as error:  # a bug or a library fault must not end sampling or the job
            self._read_log.missing("sampler", "sample", describe_error(error), level=logging.WARNING)

    def _sample(self) -> None:
        started, cpu_started = time.monotonic(), time.thread_time()
        time_s = started - self._t0
        active, rows = self._active, []
        for slot in active.slots:
            row = {"time_s": time_s, "device": slot.label, "backend": "+".join(slot.backends)}
            if slot.vendor_device is not None:
                row.update(active.vendor.read(slot.vendor_device, slot.label, self._read_log))
            if slot.torch_ordinal is not None:
                row.update(
                    active.torch.read(
                        slot.torch_ordinal, slot.label, self._read_log, device_wide=slot.vendor_device is None
                    )
                )
            if slot.kind == "process":
                row.update(active.cpu.read(slot.label, self._read_log))
            rows.append(row)
        with self._lock:
            # The phase in force when the sample began, even if set_phase() ran while it was taken.
            phase = [name for start, name in self._phases if start <= time_s][-1]
            for row in rows:
                row["phase"] = phase
            self._rows.extend(rows)
            self._sample_times.append(time_s)
            self._sample_costs.append((time.monotonic() - started, time.thread_time() - cpu_started))

    def _write_csv(self, rows) -> None:
        with atomic_path(self.csv_path) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(CSV_COLUMNS)
                for row in rows:
                    writer.writerow([_cell(row.get(column)) for column in CSV_COLUMNS])


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(round(value, 3))
    return str(value)
