"""The workflow run by the real snakemake CLI, as a user runs it: in a copy of the repository (so a
test may edit its files) or in a folder of its own beside the repository's Snakefile."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO

SNAKEFILE = REPO / "Snakefile"
WORKFLOW_PARTS = ["Snakefile", "rules", "scripts", "report", "config", "envs", "profiles"]
SCENARIOS = REPO / "tests" / "scenarios"


def copy_workflow(target: Path) -> Path:
    """A clone-like copy of the workflow, so tests can edit its files without touching the repo."""
    for part in WORKFLOW_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, target / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target / part)
    return target


def snakemake_command(*args: str, snakefile: Path | None = None) -> list[str]:
    """The command line: this Python's snakemake, with `-s snakefile` when the workdir has none."""
    return [sys.executable, "-m", "snakemake", *(["-s", str(snakefile)] if snakefile else []), *args]


def offline_env(env: dict | None = None) -> dict:
    """This process's environment, offline for the Hugging Face Hub, with `env` on top."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}


def snakemake(
    workdir: Path, *args: str, env: dict | None = None, snakefile: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run snakemake in `workdir` (environment: offline_env(env)); with `check`, fail on a non-zero exit
    and show the end of what it printed."""
    result = subprocess.run(
        snakemake_command(*args, snakefile=snakefile),
        cwd=workdir,
        capture_output=True,
        text=True,
        env=offline_env(env),
        timeout=900,
    )
    if check:
        succeeded(result)
    return result


def succeeded(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, (
        f"snakemake {' '.join(map(str, result.args[3:]))} failed ({result.returncode}):\n"
        f"{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
    )
    return result


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """{rule: count} of what a dry run would execute."""
    out = snakemake(workdir, "-n", "--cores", "2", "--quiet", "rules", *args).stdout
    jobs = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job"):
            jobs[parts[0]] = int(parts[1])
    return jobs


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


class SnakemakeAttempt:
    """One `snakemake` in the background, in its own process group (so that a signal reaches every job it
    started, as SLURM's or a preemption's does); it prints to snakemake-<name>.out in `workdir`, and
    train_log() is what its training job added to the run's log `train_log` (relative to `workdir`)."""

    poll_s = 0.01

    def __init__(self, workdir: Path, name: str, command: list[str], env: dict, train_log: str):
        self.workdir, self.name = workdir, name
        self._train_log = workdir / train_log
        self._log_before = self._train_log.read_text(encoding="utf-8") if self._train_log.exists() else ""
        self._output = open(workdir / f"snakemake-{name}.out", "w", encoding="utf-8")
        self.process = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=self._output, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_until(self, condition, what: str, timeout: float = 900):
        """Poll `condition` until it returns something true, and return that; fail if snakemake ends first."""
        deadline = time.monotonic() + timeout
        while not (value := condition()):
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name}: snakemake ended ({self.process.returncode}) before {what}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {what} after {timeout:.0f} s:\n{self.tail()}")
            try:
                self.process.wait(timeout=self.poll_s)
            except subprocess.TimeoutExpired:
                pass
        return value

    def signal_group(self, signum: int = signal.SIGKILL) -> int:
        """Send `signum` to snakemake and every process it started; its exit code."""
        os.killpg(self.process.pid, signum)
        return self.finish()

    def finish(self, timeout: float = 900) -> int:
        code = self.process.wait(timeout=timeout)
        self._output.close()
        return code

    def output(self) -> str:
        return (self.workdir / f"snakemake-{self.name}.out").read_text(encoding="utf-8")

    def train_log(self) -> str:
        """What this attempt's training job wrote to the run's log."""
        text = self._train_log.read_text(encoding="utf-8") if self._train_log.exists() else ""
        return text[len(self._log_before) :] if text.startswith(self._log_before) else text

    def tail(self) -> str:
        return f"{self.output()[-4000:]}\n--- {self._train_log.name}:\n{self.train_log()[-4000:]}"
