"""profiles/slurm without a cluster: `snakemake --profile profiles/slurm -n` builds the DAG of the default
and the blog config (no --cores, no warning), and every job's resources, as the dry run shows them, pass
the SLURM executor plugin's own checks and make the sbatch and srun calls a cluster should get. The plugin's
functions are called as it calls them when it submits (snakemake_executor_plugin_slurm 2.8.0); the real
submissions are in tests/test_slurm.py."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from helpers.workflow import copy_workflow, snakemake
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string
from snakemake_executor_plugin_slurm.validation import validate_slurm_extra
from snakemake_executor_plugin_slurm_jobstep import get_cpu_setting, get_gpu_setting, get_node_setting
from snakemake_interface_common.exceptions import WorkflowError

from conftest import REPO
from ftcompare.config import run_settings

PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
CONFIGS = ["config/config.yaml", "config/blog.yaml"]


class Resources(dict):
    """A job's resources as the plugin reads them: `resources.get(name)` and `resources.name`."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def parse_value(text: str):
    return int(text) if text.lstrip("-").isdigit() else text


def dry_run_jobs(output: str) -> list[SimpleNamespace]:
    """The jobs a `snakemake -n` printed: rule, wildcards, threads and resources of each; `local` for the
    target rule `all`, which has nothing to run and which Snakemake finishes itself, without sbatch."""
    jobs = []
    for line in output.splitlines():
        stripped = line.strip()
        if line.startswith(("rule ", "localrule ")) and stripped.endswith(":"):
            jobs.append(
                SimpleNamespace(
                    name=(name := stripped.split()[1].rstrip(":")),
                    local=name == "all",
                    wildcards={},
                    threads=1,
                    resources=Resources(),
                )
            )
        elif jobs and stripped.startswith("wildcards: "):
            jobs[-1].wildcards = dict(pair.split("=", 1) for pair in stripped.removeprefix("wildcards: ").split(", "))
        elif jobs and stripped.startswith("threads: "):
            jobs[-1].threads = int(stripped.removeprefix("threads: "))
        elif jobs and stripped.startswith("resources: "):
            pairs = (pair.split("=", 1) for pair in stripped.removeprefix("resources: ").split(", "))
            jobs[-1].resources = Resources({key: parse_value(value) for key, value in pairs})
    return jobs


def sbatch_call(job, settings) -> str:
    """The sbatch command line the plugin builds for `job` (account and partition: the profile's, if set)."""
    resources = job.resources
    params = {
        "run_uuid": "RUN",
        "slurm_logfile": Path(".snakemake/slurm_logs/%j.log"),
        "comment_str": f"rule_{job.name}",
        "account": f" -A {resources['slurm_account']}" if "slurm_account" in resources else "",
        "partition": f" -p {resources['slurm_partition']}" if "slurm_partition" in resources else "",
        "workdir": "/work",
    }
    return get_submit_command(job, params, settings=settings) + set_gres_string(job)


def srun_options(job) -> str:
    """What the jobstep plugin adds to its `srun` inside the allocation."""
    gpu_job = bool(job.resources.get("gpu"))
    return f"{get_cpu_setting(job, gpu_job)} {get_gpu_setting(job)} {get_node_setting(job)}"


@pytest.fixture(scope="module")
def profile():
    return yaml.safe_load(PROFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def plugin_settings(profile):
    return SimpleNamespace(requeue=profile.get("slurm-requeue", False), no_requeue=False, qos=None, reservation=None)


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    """{config: (jobs, what snakemake printed)} of `snakemake --profile profiles/slurm -n`, run as a user
    runs it in a clone: no --cores, the workflow's own profiles/default merged in by Snakemake."""
    workdir = copy_workflow(tmp_path_factory.mktemp("slurm-dry-run"))
    runs = {}
    for config in CONFIGS:
        result = snakemake(workdir, "--profile", "profiles/slurm", "-n", "--configfile", config)
        printed = result.stdout + result.stderr
        runs[config] = (dry_run_jobs(printed), printed)
    return runs


@pytest.mark.parametrize("config", CONFIGS)
def test_the_dag_builds_with_the_profile_without_cores_or_warnings(dry_runs, config):
    jobs, printed = dry_runs[config]
    assert "Using profiles profiles/slurm and workflow specific profile profiles/default" in printed
    assert "warn" not in printed.lower(), printed
    names = [job.name for job in jobs if not job.local]
    assert {"base_model", "prepare_data", "train", "generate", "report"} <= set(names)


@pytest.mark.parametrize("config", CONFIGS)
def test_every_jobs_slurm_extra_passes_the_plugins_validation(dry_runs, config):
    jobs, _ = dry_runs[config]
    extras = {job.name: job.resources.get("slurm_extra") for job in jobs if not job.local}
    assert extras["train"] == "--signal=TERM@120"
    for job in jobs:
        validate_slurm_extra(job)  # raises WorkflowError on an option the plugin sets itself


def test_what_the_profile_had_before_is_refused_by_the_plugin():
    """--gres in slurm_extra (what profiles/slurm had): the plugin refuses to submit."""
    job = SimpleNamespace(resources=Resources(slurm_extra="--gres=gpu:1 --signal=TERM@120"))
    with pytest.raises(WorkflowError, match="generic-resources"):
        validate_slurm_extra(job)


def test_the_default_config_asks_sbatch_for_cpus_memory_and_time_and_no_gpu(dry_runs, plugin_settings, profile):
    jobs, _ = dry_runs["config/config.yaml"]
    cpus = {rule: spec["cpus_per_task"] for rule, spec in profile["set-resources"].items()}
    for job in (job for job in jobs if not job.local):
        call = sbatch_call(job, plugin_settings)
        assert f"-t {job.resources['runtime']}" in call and f"--mem {job.resources['mem_mb']}" in call, call
        assert "--nodes=1" in call and "--requeue" in call and "--ntasks=1" in call, call
        assert "--gpus" not in call and "--gres" not in call, call
        # CPUs from the profile, not from the threads the submit host's cores gave the rule.
        assert f"--cpus-per-task={cpus.get(job.name, job.threads)}" in call, call
        assert ("--signal=TERM@120" in call) == (job.name == "train"), call


def test_the_blog_asks_one_gpu_per_generate_job_and_a_runs_devices_per_train_job(
    dry_runs, plugin_settings, blog_config
):
    jobs, config = dry_runs["config/blog.yaml"][0], blog_config
    gpu_jobs = [job for job in jobs if job.name in ("train", "generate")]
    assert len(gpu_jobs) == 2 * len(config["runs"]) + 1
    for job in gpu_jobs:
        gpus = 1
        if job.name == "train":
            gpus = run_settings(config, job.wildcards["run"])["training"].get("devices", 1)
        call = sbatch_call(job, plugin_settings)
        assert call.endswith(f" --gpus={gpus}") and "--nodes=1" in call and "--cpus-per-task=8" in call, call
        assert f"--gpus={gpus}" in srun_options(job) and "--nodes=1" in srun_options(job)
    for job in (job for job in jobs if job.name in ("base_model", "prepare_data", "report")):
        assert "--gpus" not in sbatch_call(job, plugin_settings)


def test_a_multi_gpu_run_gets_its_gpus_on_one_node_inside_and_outside(dry_runs, plugin_settings):
    """A run whose train job has gpu=2 (training.devices: 2, from the GPU-node work): sbatch asks two GPUs
    on one node, and the job step inside the allocation (srun) gets both; its processes start there."""
    jobs, _ = dry_runs["config/blog.yaml"]
    train = next(job for job in jobs if job.name == "train")
    job = SimpleNamespace(name="train", threads=train.threads, resources=Resources({**train.resources, "gpu": 2}))
    call = sbatch_call(job, plugin_settings)
    assert "--gpus=2" in call and "--nodes=1" in call and "--cpus-per-task=8" in call, call
    assert srun_options(job).split() == ["--cpus-per-task=8", "--gpus=2", "--nodes=1"]
