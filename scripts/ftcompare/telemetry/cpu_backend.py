"""This process and its children on the host: resident memory and CPU use, through psutil."""

import logging
import os
import time

import psutil

from ftcompare.telemetry.reading import BackendUnavailable, describe_error
from ftcompare.telemetry.schema import MIB

NAME = "cpu"
COLUMNS = ("rss_mb", "cpu_pct")
# Finding children scans /proc in Python; redoing it every sample would cost more than the sample.
CHILD_SCAN_INTERVAL_S = 2.0


class CpuBackend:
    name = NAME
    columns = COLUMNS

    def __init__(self, process: psutil.Process):
        self.process = process
        self._children = []
        self._children_scanned_at = None
        self._last = None  # (monotonic time, {pid: cpu seconds}) of the previous sample

    @classmethod
    def open(cls, pid: int | None = None):
        try:
            process = psutil.Process(pid or os.getpid())
            process.memory_info()
            process.cpu_times()
        except Exception as error:
            raise BackendUnavailable(f"psutil cannot read this process: {describe_error(error)}") from None
        return cls(process)

    def close(self) -> None:
        """Nothing to release."""

    def describe(self) -> str:
        try:
            name = self.process.name()
        except psutil.Error:
            name = "?"
        return f"process {self.process.pid} ({name}) and its child processes"

    def sources(self) -> dict:
        return {
            "rss_mb": "process RSS (with children)",
            "cpu_pct": "process CPU time (with running children) per interval, % of one core",
        }

    def read(self, label: str, read_log) -> dict:
        now = time.monotonic()
        processes = [self.process] + self._current_children(now)
        rss_bytes, cpu_seconds = 0, {}
        for process in processes:
            try:
                with process.oneshot():
                    rss_bytes += process.memory_info().rss
                    times = process.cpu_times()
                    cpu_seconds[process.pid] = (times.user + times.system, process.create_time())
            except psutil.NoSuchProcess:
                continue  # a child that just exited
            except psutil.Error as error:
                if process is self.process:
                    for column in COLUMNS:
                        read_log.failed(label, column, error, NAME)
                    return {column: None for column in COLUMNS}
        cpu_pct = None
        if self._last is not None:
            last_time, last_seconds = self._last
            used = 0.0
            for pid, (seconds, created) in cpu_seconds.items():
                if pid in last_seconds:
                    used += max(0.0, seconds - last_seconds[pid])
                elif created >= time.time() - (now - last_time):
                    used += seconds  # started during this interval
            cpu_pct = 100.0 * used / (now - last_time) if now > last_time else None
        else:
            read_log.missing(
                label,
                "cpu_pct",
                "cpu: the first sample has no previous one to measure CPU time from",
                level=logging.DEBUG,
            )
        self._last = (now, {pid: seconds for pid, (seconds, _) in cpu_seconds.items()})
        return {"rss_mb": rss_bytes / MIB, "cpu_pct": cpu_pct}

    def _current_children(self, now):
        if self._children_scanned_at is None or now - self._children_scanned_at >= CHILD_SCAN_INTERVAL_S:
            try:
                self._children = self.process.children(recursive=True)
            except psutil.Error:
                self._children = []
            self._children_scanned_at = now
        return self._children
