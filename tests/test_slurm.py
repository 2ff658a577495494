"""profiles/slurm against a real SLURM: the single-node cluster of tests/cluster/slurm.sh (SLURM 22.05 from
Debian's packages, accounting through slurmdbd, this machine's CPUs and one GPU that is not there), which
`make test` starts as root before pytest and stops after it.

Every run is `snakemake --profile profiles/slurm` as a user types it, with a second profile on top for this
small node (profiles/slurm-node, written here): one CPU and 3 GB per job (the node has this machine's 2
CPUs, the tiny study needs well under 1 GB, and the rules' mem_mb are for real models), `gpu: 1` for train
jobs (device: cpu gives them none, and one must show that it got its GPU), and the plugin's first status
check after 5 s instead of 40. Status checks are the plugin's default: sacct.

- the end-to-end test study, beside a local run of the same config: same losses, to the digit;
- one training run interrupted twice: its time limit runs out (SLURM itself sends SIGTERM, from the
  profile's --signal), then its node dies (SIGKILL to every process of the job and to the snakemake that
  watched it); the rerun resumes and finishes.

Where there is no such SLURM (no root to start it) the tests skip, saying why; under CI they fail instead.
"""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from helpers.workflow import (
    SCENARIOS,
    SnakemakeAttempt,
    copy_workflow,
    offline_env,
    planned_jobs,
    snakemake,
    snakemake_command,
    succeeded,
)

from conftest import REPO
from ftcompare.checkpoints import FINISHED_FILE, checkpoint_step, is_complete
from ftcompare.config import validate_config

pytestmark = pytest.mark.slow

CLUSTER = "ftcompare"  # ClusterName in tests/cluster/slurm.conf.in
HOW_TO_START = "as root: `bash tests/cluster/slurm.sh start`, or `make test`, which starts and stops it"
SCENARIO = SCENARIOS / "config_default.yaml"
# What this node can give a job (see the module docstring).
NODE_RESOURCES = {"cpus_per_task": 1, "mem_mb": 3000}
PROFILES = ["--profile", "profiles/slurm", "--profile", "profiles/slurm-node"]
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+)/")

# The interrupted run: long enough that the test can stop it mid-training (see run_out_of_time).
RUN = "long"
LONG_STEPS = 400
SAVE_STEPS = 20
LOGGING_STEPS = 10
METRICS = f"results/runs/{RUN}/metrics.json"
TRAIN_LOG = f"results/logs/train/{RUN}.log"
CHECKPOINTS = f"results/checkpoints/{RUN}"


def command(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def why_no_slurm() -> str | None:
    """Why the test cluster cannot take jobs here, or None when it can."""
    if shutil.which("sbatch") is None:
        return f"sbatch is not installed here ({HOW_TO_START})"
    try:
        config = command("scontrol", "show", "config", timeout=30)
    except subprocess.TimeoutExpired:
        return f"slurmctld did not answer `scontrol show config` within 30 s ({HOW_TO_START})"
    if config.returncode != 0:
        return f"SLURM is not running here: {config.stderr.strip()[:300]} ({HOW_TO_START})"
    if not re.search(rf"^ClusterName\s*=\s*{CLUSTER}$", config.stdout, re.MULTILINE):
        return "the SLURM running here is not tests/cluster/slurm.sh's test cluster; not submitting to it"
    states = set(command("sinfo", "-h", "-o", "%t").stdout.split())
    if not states & {"idle", "mix", "alloc"}:
        return f"the test cluster's node is {sorted(states)}, not up ({HOW_TO_START})"
    if command("sacct", "-n", "-X").returncode != 0:
        return "sacct fails: SLURM runs without its accounting (slurmdbd)"
    return None


@pytest.fixture(scope="module")
def cluster():
    reason = why_no_slurm()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the SLURM tests, but {reason}", pytrace=False)
        pytest.skip(reason)


def write_node_profile(workdir: Path) -> None:
    """profiles/slurm-node: profiles/slurm's set-resources with NODE_RESOURCES on every rule and one GPU for
    train. Snakemake takes set-resources whole from the last profile that has it, so all of it is here."""
    profile = yaml.safe_load((workdir / "profiles" / "slurm" / "config.yaml").read_text(encoding="utf-8"))
    rules = [path.stem for path in (workdir / "rules").glob("*.smk") if path.stem != "common"]
    resources = {rule: {**profile.get("set-resources", {}).get(rule, {}), **NODE_RESOURCES} for rule in rules}
    resources["train"]["gpu"] = 1
    overlay = {"set-resources": resources, "slurm-init-seconds-before-status-checks": 5}
    (workdir / "profiles" / "slurm-node").mkdir()
    (workdir / "profiles" / "slurm-node" / "config.yaml").write_text(yaml.safe_dump(overlay), encoding="utf-8")


def submitted(output: str) -> list[tuple[str, str]]:
    """(rule, SLURM job id) of every job snakemake submitted, in order."""
    return [(rule, job) for job, rule in SUBMITTED.findall(output)]


def sacct_states(*jobs: str) -> dict[str, str]:
    """{job or step id: state} from the accounting database."""
    result = command("sacct", "-n", "-P", "-j", ",".join(jobs), "-o", "JobID,State")
    assert result.returncode == 0, result.stderr
    return dict(line.split("|", 1) for line in result.stdout.splitlines() if line)


def read_log_history(workdir: Path, run: str) -> list[dict]:
    with open(workdir / "results" / "runs" / run / "log_history.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --- the end-to-end study -------------------------------------------------------------------------


@dataclass
class Study:
    workdir: Path  # run on SLURM
    local: Path  # the same config's training, run locally
    runs: list[str]
    planned: dict[str, int]  # {rule: jobs} a dry run plans
    output: str  # what the SLURM run printed
    jobs: list[tuple[str, str]]  # (rule, SLURM job id)


@pytest.fixture(scope="module")
def study(cluster, tmp_path_factory):
    """The test study on SLURM and, at the same time, its training locally with one thread per job (what
    each SLURM job gets here), for the losses to compare."""
    runs = list(validate_config(yaml.safe_load(SCENARIO.read_text(encoding="utf-8")), search_dirs=[REPO])["runs"])
    on_slurm = copy_workflow(tmp_path_factory.mktemp("slurm-study"))
    local = copy_workflow(tmp_path_factory.mktemp("local-study"))
    for workdir in (on_slurm, local):
        shutil.copy(SCENARIO, workdir / "config" / "e2e.yaml")
    write_node_profile(on_slurm)
    planned = planned_jobs(on_slurm, "--configfile", "config/e2e.yaml")
    with ThreadPoolExecutor(max_workers=2) as pool:
        slurm_run = pool.submit(snakemake, on_slurm, *PROFILES, "--configfile", "config/e2e.yaml", check=False)
        targets = [f"results/runs/{run}/metrics.json" for run in runs]
        local_run = pool.submit(
            snakemake, local, *targets, "--cores", "2", "--max-threads", "1", "--configfile", "config/e2e.yaml"
        )
        slurm_result = slurm_run.result()
        local_run.result()
    output = slurm_result.stdout + slurm_result.stderr
    (on_slurm / "snakemake.out").write_text(output, encoding="utf-8")
    succeeded(slurm_result)
    return Study(on_slurm, local, runs, planned, output, submitted(output))


def test_every_job_is_a_slurm_job_and_sacct_lists_each_completed(study):
    assert "SLURM run ID: " in study.output
    expected = {rule: count for rule, count in study.planned.items() if rule != "all"}  # `all` runs nothing
    assert Counter(rule for rule, _ in study.jobs) == expected
    states = sacct_states(*(job for _, job in study.jobs))
    # Each job, its batch step and the step the jobstep plugin started with srun.
    for _, job in study.jobs:
        assert {states.get(job), states.get(f"{job}.batch"), states.get(f"{job}.0")} == {"COMPLETED"}, states


def test_every_output_exists_and_the_losses_equal_a_local_runs_to_the_digit(study):
    assert planned_jobs(study.workdir, "--configfile", "config/e2e.yaml") == {}  # nothing missing or stale
    results, local = study.workdir / "results", study.local / "results"
    for path in ["models/base/model.safetensors", "data/train.parquet", "data/eval.parquet"]:
        assert (results / path).read_bytes() == (local / path).read_bytes(), path
    for run in study.runs:
        on_slurm, here = read_log_history(study.workdir, run), read_log_history(study.local, run)
        for column in ("step", "epoch", "loss", "learning_rate", "grad_norm"):
            assert [row[column] for row in on_slurm] == [row[column] for row in here], (run, column)
        metrics = json.loads((results / "runs" / run / "metrics.json").read_text(encoding="utf-8"))
        reference = json.loads((local / "runs" / run / "metrics.json").read_text(encoding="utf-8"))
        for key in ("train_steps", "final_train_loss", "mean_train_loss", "eval_loss", "eval_loss_before_training"):
            assert metrics[key] == reference[key], (run, key)
    for model in ["base", *study.runs]:
        assert (results / "generations" / f"{model}.jsonl").stat().st_size > 0, model
    assert (results / "report" / "report.html").is_file()


def test_a_train_job_asked_for_one_gpu_gets_it_and_no_other_job_gets_one(study):
    for rule, job in study.jobs:
        shown = command("scontrol", "show", "job", "-d", job)
        assert shown.returncode == 0, f"job {job} ({rule}) no longer in slurmctld: {shown.stderr}"
        allocated = command("sacct", "-n", "-X", "-P", "-j", job, "-o", "AllocTRES").stdout
        if rule == "train":
            assert "TresPerJob=gres:gpu:1" in shown.stdout, shown.stdout
            assert "JOB_GRES=gpu:1" in shown.stdout, shown.stdout
            assert "gres/gpu=1" in allocated, allocated
        else:
            assert "TresPerJob" not in shown.stdout and "gres/gpu" not in allocated, (rule, shown.stdout)


# --- a run interrupted by its time limit, then by the death of its node ------------------------------


class Attempt(SnakemakeAttempt):
    """One `snakemake` for the run's metrics through the SLURM profile."""

    poll_s = 0.2

    def __init__(self, workdir: Path, name: str, *args: str):
        command = snakemake_command(METRICS, *args, "--configfile", "config/long.yaml")
        super().__init__(workdir, name, command, offline_env(), TRAIN_LOG)

    def slurm_job(self, rule: str) -> str:
        return self.wait_until(
            lambda: next((job for r, job in submitted(self.output()) if r == rule), None), f"{rule} job submitted"
        )


def newest_complete_step(workdir: Path) -> int:
    folder = workdir / CHECKPOINTS
    steps = (
        [checkpoint_step(path) for path in folder.glob("checkpoint-*") if is_complete(path)] if folder.exists() else []
    )
    return max(steps, default=0)


def running_seconds(job: str) -> int:
    """How long the job has run, from squeue's %M ([days-][hours:]minutes:seconds)."""
    elapsed = command("squeue", "-h", "-j", job, "-o", "%M").stdout.strip()
    days, _, clock = elapsed.rpartition("-")
    seconds = 0
    for part in clock.split(":"):
        seconds = seconds * 60 + int(part)
    return seconds + int(days or 0) * 86400


def job_pids(job: str, step: str | None = None) -> list[int]:
    """The processes of a job (of one step: "batch", "0", ...), as slurmd lists them."""
    lines = command("scontrol", "listpids", job).stdout.splitlines()[1:]
    return [int(fields[0]) for fields in map(str.split, lines) if step is None or fields[2] == step]


def signal_pending(pid: int, signum: int) -> bool:
    """Whether `signum` waits for the (stopped) process `pid`: a gone process counts as having had it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    except FileNotFoundError:
        return True
    masks = (int(line.split()[1], 16) for line in status.splitlines() if line.startswith(("ShdPnd:", "SigPnd:")))
    return any(mask & (1 << (signum - 1)) for mask in masks)


def run_out_of_time(job: str) -> None:
    """Shorten the running job's time limit so that the profile's --signal=TERM@120 is due at once (the
    limit now ends 1 to 2 minutes away); slurmctld sends SIGTERM at its next time-limit check, within
    30 s. Meanwhile the job step (snakemake and the training under it) is held with SIGSTOP, so that
    however fast this machine trains, the run cannot finish first; once SIGTERM waits on every one of its
    processes they go on (SIGCONT) and the training handles it."""
    pids = job_pids(job, step="0")
    assert pids, f"job {job} has no job step"
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        result = command("scontrol", "update", f"JobId={job}", f"TimeLimit={running_seconds(job) // 60 + 2}")
        assert result.returncode == 0, result.stderr
        deadline = time.monotonic() + 120
        while not all(signal_pending(pid, signal.SIGTERM) for pid in pids):
            assert time.monotonic() < deadline, f"no SIGTERM from SLURM 120 s after job {job}'s limit was shortened"
            time.sleep(0.5)
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def kill_job_and_watcher(attempt: Attempt, job: str) -> None:
    """The node dies: SIGKILL to every process of the job (the batch step's and the job step's, as slurmd lists
    them) and to the snakemake that submitted it (it had run on that node too, or its session went)."""
    attempt.signal_group(signal.SIGKILL)
    pids = job_pids(job)
    assert pids, f"job {job} has no processes"
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 60
    while command("squeue", "-h", "-j", job).stdout.strip() and time.monotonic() < deadline:
        time.sleep(0.5)


@dataclass
class Outcome:
    code: int
    job: str
    output: str
    log: str
    step: int  # the newest complete checkpoint afterwards
    metrics_existed: bool


@pytest.fixture(scope="module")
def interrupted(study, tmp_path_factory):
    """The study's base model and data, and a new run of LONG_STEPS steps: its time limit runs out; the rerun dies
    with its node; the next rerun finishes. Each is `snakemake --profile profiles/slurm`."""
    workdir = tmp_path_factory.mktemp("interrupted")
    shutil.copytree(study.workdir, workdir, dirs_exist_ok=True)
    config = yaml.safe_load(SCENARIO.read_text(encoding="utf-8"))
    config["training"].update(max_steps=LONG_STEPS, save_steps=SAVE_STEPS, logging_steps=LOGGING_STEPS)
    config["runs"] = {RUN: {"method": "lora", "training": {"learning_rate": 5.0e-3}}}
    config["telemetry"] = {"interval_s": 0.5}
    (workdir / "config" / "long.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    found, attempts = {}, []

    def record(attempt: Attempt, job: str, code: int) -> Outcome:
        return Outcome(
            code,
            job,
            attempt.output(),
            attempt.train_log(),
            newest_complete_step(workdir),
            (workdir / METRICS).exists(),
        )

    try:
        # 1. The time limit runs out. Without the workflow profile, so without --cores at all.
        attempts.append(attempt := Attempt(workdir, "time-limit", *PROFILES, "--workflow-profile", "none"))
        job = attempt.slurm_job("train")
        attempt.wait_until(lambda: newest_complete_step(workdir), "the first checkpoint")
        run_out_of_time(job)
        found["time_limit"] = record(attempt, job, attempt.finish())

        # 2. The rerun resumes; once it has saved a checkpoint of its own, its node dies.
        attempts.append(attempt := Attempt(workdir, "node-death", *PROFILES))
        job = attempt.slurm_job("train")
        attempt.wait_until(lambda: newest_complete_step(workdir) > found["time_limit"].step, "a new checkpoint")
        kill_job_and_watcher(attempt, job)
        found["node_death"] = record(attempt, job, attempt.process.returncode)
        found["incomplete"] = list((workdir / ".snakemake" / "incomplete").iterdir())

        # 3. The same command again, after --unlock: it resumes and finishes.
        succeeded(snakemake(workdir, *PROFILES, "--unlock"))
        attempts.append(attempt := Attempt(workdir, "resumed", *PROFILES))
        code = attempt.finish(timeout=900)
        found["resumed"] = record(attempt, next((j for r, j in submitted(attempt.output()) if r == "train"), ""), code)
    finally:
        for attempt in attempts:
            if attempt.process.poll() is None:
                attempt.signal_group(signal.SIGKILL)
        jobs = [job for attempt in attempts for _, job in submitted(attempt.output())]
        if jobs:
            command("scancel", *jobs)
    return workdir, found


def test_a_job_whose_time_limit_runs_out_gets_sigterm_saves_a_checkpoint_and_fails(interrupted):
    _, found = interrupted
    outcome = found["time_limit"]
    assert outcome.code != 0 and not outcome.metrics_existed
    # The test sent no signal: SLURM did, 120 s before the time limit, as the profile's slurm_extra asks.
    assert f"run {RUN}: stopped by SIGTERM at step {outcome.step}; a checkpoint was saved" in outcome.log
    assert SAVE_STEPS < outcome.step < LONG_STEPS
    assert sacct_states(outcome.job)[outcome.job] == "FAILED"
    assert f"SLURM-job '{outcome.job}' failed" in outcome.output


def test_a_job_that_dies_with_its_node_leaves_its_outputs_incomplete(interrupted):
    _, found = interrupted
    killed, terminated = found["node_death"], found["time_limit"]
    assert f"resuming run {RUN} from {CHECKPOINTS}/checkpoint-{terminated.step} (step {terminated.step})" in killed.log
    assert killed.code == -signal.SIGKILL and not killed.metrics_existed
    assert killed.step > terminated.step
    assert sacct_states(killed.job)[killed.job] in ("FAILED", "CANCELLED", "NODE_FAIL")
    # Snakemake died with it: the job's outputs are still marked as being made.
    assert found["incomplete"], "no output marked incomplete"


def test_the_rerun_with_the_profile_resumes_and_finishes_every_step_once(interrupted):
    workdir, found = interrupted
    resumed, killed_at = found["resumed"], found["node_death"].step
    assert resumed.code == 0, resumed.output[-4000:] + resumed.log[-4000:]
    assert f"resuming run {RUN} from {CHECKPOINTS}/checkpoint-{killed_at} (step {killed_at})" in resumed.log
    assert sacct_states(resumed.job)[resumed.job] == "COMPLETED"
    steps = [int(row["step"]) for row in read_log_history(workdir, RUN)]
    assert steps == sorted({1, *range(LOGGING_STEPS, LONG_STEPS + 1, LOGGING_STEPS), LONG_STEPS})
    metrics = json.loads((workdir / METRICS).read_text(encoding="utf-8"))
    assert metrics["train_steps"] == LONG_STEPS and metrics["resumed_from_step"] == killed_at
    assert (workdir / CHECKPOINTS / FINISHED_FILE).is_file()
