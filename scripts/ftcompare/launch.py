"""The train job's side of a run trained by several processes (training.strategy ddp or fsdp).

The job (scripts/train.py) keeps its telemetry sampler, prepares the checkpoint folder once, then starts
torchrun with one ftcompare.train_worker per device and waits. It forwards SIGTERM (every rank then saves
a checkpoint and stops at the same step), relays the phases rank 0 reports to its sampler, and fails
with the message of the rank that failed. Rank 0 leaves its metrics and log rows in a result file.

A kill of the job must not leave ranks training: torchrun starts each rank in a session of its own, out
of reach of a signal to the job's process group, so torchrun and every rank die with their parent
(`python -m ftcompare.launch` is torchrun plus that).
"""

import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from ftcompare.atomic import write_json
from ftcompare.checkpoints import prepare_checkpoint_dir
from ftcompare.errors import FtcompareError
from ftcompare.metrics import RunMetrics
from ftcompare.parallel import processes

log = logging.getLogger("ftcompare.launch")

SCRIPTS_DIR = Path(__file__).resolve().parents[1]
# How long torchrun lets the ranks save a checkpoint after SIGTERM before it kills them.
SHUTDOWN_GRACE_S = 300
_POLL_S = 0.5
RESET_PEAKS = "reset_peaks"


def worker_command(count: int, spec: Path) -> list[str]:
    """torchrun on this node starting `count` ranks of ftcompare.train_worker on the job's spec file."""
    return [
        sys.executable,
        "-m",
        "ftcompare.launch",
        "--standalone",
        f"--nproc-per-node={count}",
        f"--shutdown-timeout={SHUTDOWN_GRACE_S}",
        "-m",
        "ftcompare.train_worker",
        str(spec),
    ]


def worker_env(count: int, threads: int | None, environ=os.environ) -> dict:
    """The job's environment, ftcompare importable, the job's cores shared out between the ranks."""
    path = [str(SCRIPTS_DIR)] + ([environ["PYTHONPATH"]] if environ.get("PYTHONPATH") else [])
    return {
        **environ,
        "PYTHONPATH": os.pathsep.join(path),
        "OMP_NUM_THREADS": str(max(1, (threads or os.cpu_count() or 1) // count)),
    }


def train_in_processes(
    settings: dict, paths, device: str, dtype: str, trust_remote_code: bool, fingerprint: dict, sampler, threads
) -> tuple[RunMetrics, list[dict]]:
    """train_run in `training.devices` processes; returns rank 0's (metrics, log-history rows)."""
    run, count = settings["run"], processes(settings["training"])
    resume_from = prepare_checkpoint_dir(paths.checkpoints, fingerprint)
    sampler.set_phase("load")
    with tempfile.TemporaryDirectory(prefix=f"ftcompare-train-{run}-") as tmp:
        tmp = Path(tmp)
        spec = {
            "settings": settings,
            "paths": {name: str(path) for name, path in asdict(paths).items()},
            "device": device,
            "dtype": dtype,
            "trust_remote_code": trust_remote_code,
            "resume_from": str(resume_from) if resume_from else None,
            "threads": max(1, (threads or os.cpu_count() or 1) // count),
            "phases": str(tmp / "phases"),
            "errors": str(tmp / "errors"),
            "result": str(tmp / "result.json"),
        }
        write_json(tmp / "spec.json", spec)
        command = worker_command(count, tmp / "spec.json")
        log.info("run %s: %d %s processes: %s", run, count, settings["training"]["strategy"], shlex.join(command))
        run_workers(run, command, worker_env(count, threads), tmp / "errors", PhaseFollower(tmp / "phases", sampler))
        result = json.loads((tmp / "result.json").read_text(encoding="utf-8"))
    return RunMetrics.from_json(result["metrics"], run), result["rows"]


def run_workers(run: str, command: list[str], env: dict, errors: Path, on_wait=lambda: None) -> None:
    """Run the worker group to its end, SIGTERM forwarded once, calling `on_wait` while it runs; a failed
    group raises FtcompareError with the lowest failing rank's message."""
    # The job's own process group: a signal to the group (a kill of the job) reaches torchrun too.
    process = subprocess.Popen(command, env=env)
    terminated = []

    def forward(signum, frame):
        if not terminated:
            terminated.append(signum)
            process.send_signal(signum)  # torchrun passes it to every rank

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        while process.poll() is None:
            on_wait()
            time.sleep(_POLL_S)
    finally:
        signal.signal(signal.SIGTERM, previous)
    on_wait()
    if process.returncode != 0:
        raise FtcompareError(_failure(run, process.returncode, errors, bool(terminated)))


def _failure(run: str, code: int, errors: Path, terminated: bool) -> str:
    reports = sorted(errors.glob("rank*.txt"), key=lambda path: int(path.stem.removeprefix("rank")))
    if reports:
        return reports[0].read_text(encoding="utf-8")
    how = "stopped by SIGTERM" if terminated else f"failed (torchrun exit code {code})"
    return f"run {run}: the training processes {how} before any reported why; see the log above this line"


class PhaseFollower:
    """Passes on to the job's TelemetrySampler what rank 0 reported to its PhaseRelay."""

    def __init__(self, path: Path, sampler):
        self.path, self.sampler, self.offset = Path(path), sampler, 0

    def __call__(self) -> None:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                text = handle.read()
        except FileNotFoundError:
            return
        complete = text[: text.rfind(b"\n") + 1]  # a line still being written waits for the next call
        self.offset += len(complete)
        for line in complete.decode("utf-8").splitlines():
            if line == RESET_PEAKS:
                self.sampler.reset_peaks()
            else:
                self.sampler.set_phase(line)


class PhaseRelay:
    """Stands in for the sampler in each rank: rank 0 appends each phase and each reset of the peaks to a
    file the job follows; every rank resets its own GPU's torch peaks."""

    def __init__(self, path: Path, writer: bool, device: str):
        self.path, self.writer, self.device = Path(path), writer, device

    def set_phase(self, phase: str) -> None:
        self._append(phase)

    def reset_peaks(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()
        self._append(RESET_PEAKS)

    def _append(self, line: str) -> None:
        if self.writer:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")


def die_with_parent() -> None:
    """Have the kernel kill this process (SIGKILL) when the one that started it dies. Linux only."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before the line above: adopted by init already
        os._exit(1)


if __name__ == "__main__":
    die_with_parent()
    from torch.distributed.run import main

    main()
