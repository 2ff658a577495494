# Config validation (against config/config.schema.yaml, defaults filled in) and path helpers.
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))

from ftcompare.config import ConfigError, canonical, config_hash, resolve_path, run_settings, validate_config

try:
    _validated = validate_config(config, search_dirs=[Path.cwd(), Path(workflow.basedir)])
except ConfigError as error:
    sys.stderr.write(f"ftcompare: {error}\nSee config/config.schema.yaml for every key and what it allows.\n")
    sys.exit(1)
config.clear()
config.update(_validated)

WORKFLOW_DIR = Path(workflow.basedir)
RESULTS = config["results_dir"]
RUNS = list(config["runs"])
MODELS = ["base"] + RUNS
PROMPTS = str(resolve_path(config["generation"]["prompts"], [Path.cwd(), WORKFLOW_DIR]))
# The report rule reruns when its template, style, captions or library code change.
REPORT_SOURCES = sorted(
    str(p)
    for pattern in ("report/*.j2", "report/*.css", "report/*.rst", "scripts/ftcompare/report/*.py")
    for p in WORKFLOW_DIR.glob(pattern)
)
# Measurements stay honest only if jobs never share the machine: each job takes every core it is given
# (--cores; inside a SLURM job Snakemake runs with --cores all: the job's CPUs). Without --cores (a
# cluster executor) nothing here decides a job's CPUs: the profile does (profiles/slurm, cpus_per_task).
JOB_THREADS = workflow.cores if workflow.global_resources["_cores"].value is not None else 1
USES_GPU = 1 if config["device"] == "cuda" else 0


wildcard_constraints:
    run="|".join(map(re.escape, RUNS)),
    model="|".join(map(re.escape, MODELS)),


# Every params value goes through canonical(): Snakemake compares params with key order.
def train_params(wildcards):
    return canonical(run_settings(config, wildcards.run))


def run_method(wildcards):
    return "base" if wildcards.model == "base" else config["runs"][wildcards.model]["method"]


def generate_inputs(wildcards):
    inputs = {"base_model": rules.base_model.output.model, "prompts": PROMPTS}
    if wildcards.model != "base":
        inputs["run_model"] = expand(rules.train.output.model, run=wildcards.model)[0]
    return inputs


def base_model_params():
    """Only what the base model depends on: the embedded spec matters only for `embedded`."""
    section = dict(config["base_model"])
    if section["name"] != "embedded":
        section.pop("embedded")
    return canonical(section)


def data_params():
    """Only what the data depends on: embedded_rows only for `embedded`, eval_source only when it names one."""
    section = dict(config["data"])
    if section["name"] != "embedded":
        section.pop("embedded_rows")
    if section["eval_source"]["name"] is None:
        section.pop("eval_source")
    return canonical(section)


def generation_params():
    return canonical({k: v for k, v in config["generation"].items() if k not in ("prompts", "dtype")})


# What the models generate in: generation.dtype, else the dtype they trained in.
GENERATION_DTYPE = config["generation"]["dtype"] or config["base_model"]["dtype"]


TELEMETRY = canonical(config["telemetry"])
