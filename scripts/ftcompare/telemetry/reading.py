"""Reading one figure: a vendor value becomes a number, and a failure or "N/A" becomes an empty cell
with its reason recorded, never a made-up zero."""

import logging
import math
import threading

log = logging.getLogger("ftcompare.telemetry")

# amdsmi marks unsupported struct members with the maximum of their integer type; its Python layer
# turns most of them into "N/A", but not in every version or field.
_UNSUPPORTED_SENTINELS = {2**16 - 1, 2**32 - 1, 2**64 - 1}


class BackendUnavailable(Exception):
    """A backend cannot run here; the message says why, for the job log."""


def number(value):
    """A float for a real reading; None for "N/A", None, an unsupported-sentinel or anything else."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return None if value in _UNSUPPORTED_SENTINELS else float(value)
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, str):
        try:
            parsed = float(value.strip())
        except ValueError:
            return None
        return None if math.isnan(parsed) or math.isinf(parsed) else parsed
    return None


def describe_error(error: BaseException) -> str:
    """`TypeName: message`, the way a failure is logged and recorded in telemetry.json."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class ReadLog:
    """Why figures are missing, per device and column: counted, the first reason kept, logged once."""

    def __init__(self):
        self._entries = {}
        self._lock = threading.Lock()

    def failed(self, device: str, column: str, error: BaseException, backend: str) -> None:
        self.missing(device, column, f"{backend}: {describe_error(error)}", level=logging.WARNING)

    def missing(self, device: str, column: str, reason: str, level: int = logging.INFO) -> None:
        with self._lock:
            entry = self._entries.setdefault((device, column), {"count": 0, "first": reason})
            entry["count"] += 1
            first = entry["count"] == 1
        if first:
            log.log(level, "telemetry %s %s not read: %s", device, column, reason)

    def reason(self, device: str, column: str) -> str | None:
        with self._lock:
            entry = self._entries.get((device, column))
            return entry["first"] if entry else None

    def as_dict(self) -> dict:
        result = {}
        with self._lock:
            for (device, column), entry in sorted(self._entries.items()):
                result.setdefault(device, {})[column] = dict(entry)
        return result


class DeviceReading:
    """One sample of one vendor device: a call that raises leaves its columns empty, reason recorded."""

    def __init__(self, read_log: ReadLog, label: str, backend: str):
        self.read_log, self.label, self.backend = read_log, label, backend
        self.failed = set()

    def attempt(self, columns, function):
        try:
            return function()
        except Exception as error:
            for column in columns:
                self.read_log.failed(self.label, column, error, self.backend)
            self.failed.update(columns)
            return None

    def record_missing(self, values: dict, reasons: dict, default_reason: str) -> None:
        """Say why each empty value is empty, unless its call already failed (and said so)."""
        for key, value in values.items():
            column, reason = reasons.get(key, (key, default_reason))
            if value is None and column not in self.failed:
                self.read_log.missing(self.label, column, reason)
