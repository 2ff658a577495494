"""A GPU job started as scripts/train.py starts one: its devices first, through the same helper; then it
records what it was given and holds it until every job of the workflow has started (or 60 s)."""

import sys

sys.path.insert(0, snakemake.params.scripts)  # noqa: F821

from ftcompare.script_runtime import run_script, take_job_devices  # noqa: E402

JOB_DEVICES = take_job_devices(snakemake)  # noqa: F821

import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def main(smk, job_devices):
    Path(smk.params.started[int(smk.wildcards.i) - 1]).parent.mkdir(exist_ok=True)
    Path(smk.params.started[int(smk.wildcards.i) - 1]).touch()
    deadline = time.monotonic() + 60
    while not all(Path(p).exists() for p in smk.params.started) and time.monotonic() < deadline:
        time.sleep(0.1)
    record = {
        "devices": list(job_devices.devices),
        "assignment": job_devices.assignment,
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "threads": smk.threads,
        "all_jobs_running_at_once": all(Path(p).exists() for p in smk.params.started),
    }
    Path(smk.output[0]).write_text(json.dumps(record), encoding="utf-8")


run_script(main, snakemake, JOB_DEVICES)  # noqa: F821
