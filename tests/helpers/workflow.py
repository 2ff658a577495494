"""The workflow run by the real snakemake CLI, as a user runs it: in a copy of the repository (so a
test may edit its files) or in a folder of its own beside the repository's Snakefile."""

import json
import os
import shutil
import subprocess
import sys
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
