"""Where the numbers came from: config, code version, packages, torch build, devices, drivers,
command line and times, gathered when the report is built."""

import datetime
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ftcompare.report.headline import method_name
from ftcompare.report.inputs import ReportInputs

REPO_DIR = Path(__file__).resolve().parents[3]
PACKAGES = [
    "torch",
    "transformers",
    "peft",
    "trl",
    "accelerate",
    "datasets",
    "tokenizers",
    "safetensors",
    "bitsandbytes",
    "snakemake",
    "numpy",
    "pandas",
    "matplotlib",
    "seaborn",
    "jinja2",
    "jsonschema",
    "psutil",
    "amdsmi",
    "nvidia-ml-py",
]


@dataclass(frozen=True)
class GitState:
    commit: str | None
    dirty: bool | None
    changed_paths: list[str] = field(default_factory=list)

    @property
    def description(self) -> str:
        if self.commit is None:
            return "unknown (not a git checkout, or git is not installed)"
        if self.dirty is None:
            return f"{self.commit} (could not tell whether the tree was dirty)"
        if not self.dirty:
            return f"{self.commit}, clean tree"
        return (
            f"{self.commit}, dirty tree ({len(self.changed_paths)} changed or untracked path"
            f"{'s' if len(self.changed_paths) != 1 else ''})"
        )


@dataclass(frozen=True)
class DeviceRecord:
    job: str
    device: str | None
    name: str | None
    backend: str | None
    driver_version: str | None


@dataclass(frozen=True)
class RunRecord:
    run: str
    method: str | None
    learning_rate: float | None
    started_at: str | None
    finished_at: str | None
    resumed_from_step: int | None
    options: dict
    torch_build: str | None
    versions: dict[str, str]
    strategy: str | None = None
    devices: int | None = None
    processes: int | None = None
    global_batch_size: int | None = None

    @property
    def global_batch(self) -> str:
        """The global batch and how the devices made it: "8 (ddp, 2 processes)"; "—" where not recorded."""
        if self.global_batch_size is None:
            return "—"
        if self.strategy == "device_map":
            return f"{self.global_batch_size} (device_map over {self.devices} devices)"
        if self.strategy in ("ddp", "fsdp"):
            return f"{self.global_batch_size} ({self.strategy}, {self.processes} processes)"
        return str(self.global_batch_size)


@dataclass(frozen=True)
class Provenance:
    """`torch_build` and `packages` describe the report job's environment; a training job that
    records its own (metrics.json `torch_build`, `versions`) is shown per run beside it."""

    generated_at: str
    command_line: str
    git: GitState
    python: str
    platform: str
    torch_build: str
    packages: list[tuple[str, str]]
    devices: list[DeviceRecord]
    runs: list[RunRecord]
    trust_remote_code: bool
    config_hash: str
    config_yaml: str
    data_card: dict
    base_card: dict

    @property
    def run_versions(self) -> list[tuple[str, list[str | None]]]:
        """(package, version in each run) for the packages any training job recorded."""
        names = list(dict.fromkeys(name for run in self.runs for name in run.versions))
        return [(name, [run.versions.get(name) for run in self.runs]) for name in names]


def collect_provenance(
    inputs: ReportInputs,
    command_line: str | None = None,
    repo_dir: Path = REPO_DIR,
    now: datetime.datetime | None = None,
) -> Provenance:
    now = now or datetime.datetime.now(datetime.UTC)
    return Provenance(
        generated_at=now.isoformat(timespec="seconds"),
        command_line=command_line or shlex.join(sys.argv),
        git=git_state(repo_dir),
        python=platform.python_version(),
        platform=platform.platform(),
        torch_build=torch_version_and_build(),
        packages=package_versions(PACKAGES),
        devices=device_records(inputs),
        runs=[
            RunRecord(
                run.name,
                method_name(run.method),
                run.metrics.learning_rate,
                run.metrics.started_at,
                run.metrics.finished_at,
                run.metrics.resumed_from_step,
                run.metrics.options,
                run.metrics.torch_build,
                run.metrics.versions,
                strategy=run.metrics.strategy,
                devices=run.metrics.device_count,
                processes=run.metrics.processes,
                global_batch_size=run.metrics.global_batch_size,
            )
            for run in inputs.runs
        ],
        trust_remote_code=bool(inputs.config.get("trust_remote_code", False)),
        config_hash=inputs.config_hash,
        config_yaml=yaml.safe_dump(inputs.config, sort_keys=False, allow_unicode=True, width=100),
        data_card=inputs.data_card,
        base_card=inputs.base_card,
    )


def git_state(repo_dir: Path) -> GitState:
    # --no-optional-locks: reading the state must not touch the index of a tree in use.
    commit = _git(repo_dir, "rev-parse", "HEAD")
    if commit is None:
        return GitState(None, None)
    status = _git(repo_dir, "status", "--porcelain", "--untracked-files=normal")
    if status is None:
        return GitState(commit, None)
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    return GitState(commit, bool(changed), changed)


def _git(repo_dir: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(repo_dir), *args],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def torch_version_and_build() -> str:
    """The torch in the environment that built the report, as ftcompare.devices.torch_version_and_build says
    it (imported only once torch is known to be there: the report's environment may have no torch)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return "torch is not installed in the report's environment"
    from ftcompare import devices

    return devices.torch_version_and_build()


def package_versions(names: list[str]) -> list[tuple[str, str]]:
    versions = []
    for name in names:
        try:
            versions.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            versions.append((name, "not installed"))
    return versions


def device_records(inputs: ReportInputs) -> list[DeviceRecord]:
    """Each job's devices as its telemetry names them, or the trainer's device name without it."""
    records = []
    jobs = [(f"train {run.name}", run.telemetry, run.metrics.device, run.metrics.device_name) for run in inputs.runs]
    jobs += [(f"generate {model.model}", model.telemetry, None, None) for model in inputs.generations]
    for job, telemetry, device, device_name in jobs:
        listed = [d for d in telemetry.summary.get("devices") or [] if isinstance(d, dict)]
        for entry in listed:
            records.append(
                DeviceRecord(
                    job,
                    _text(entry.get("device")),
                    _text(entry.get("name")),
                    telemetry.backend,
                    _text(entry.get("driver_version")) or telemetry.driver_version,
                )
            )
        if not listed and (device or device_name or telemetry.backend):
            records.append(DeviceRecord(job, device, device_name, telemetry.backend, telemetry.driver_version))
    return records


def snakemake_command_line() -> str | None:
    """The command line of the Snakemake process that started this job, if one is an ancestor."""
    pid = os.getppid()
    for _ in range(20):  # a job runs a few processes below Snakemake; stop well before init
        argv = _command_line_of(pid)
        if argv is None or pid <= 1:
            return None
        if _is_snakemake(argv):
            return shlex.join(argv)
        pid = _parent_of(pid)
        if pid is None:
            return None
    return None


def _is_snakemake(argv: list[str]) -> bool:
    """`snakemake …`, `python …/bin/snakemake …` or `python -m snakemake …`."""
    head = argv[:3]
    return any(Path(arg).name == "snakemake" for arg in head) or ("-m" in head and "snakemake" in argv[:4])


def _command_line_of(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            import psutil  # where there is no /proc (macOS)

            return psutil.Process(pid).cmdline()
        except Exception:  # psutil missing, or the process gone or not ours to read
            return None
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1])  # the name in (…) may hold spaces
    except (OSError, ValueError, IndexError):
        try:
            import psutil

            return psutil.Process(pid).ppid()
        except Exception:
            return None


def _text(value) -> str | None:
    return str(value) if value not in (None, "") else None
