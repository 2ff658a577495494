# Config validation (against config/config.schema.yaml, defaults filled in) and path helpers.
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))

from ftcompare.config import ConfigError, canonical, config_hash, resolve_path, run_settings, validate_config
from ftcompare.plan import plan_inputs
from ftcompare.plan_resources import PLAN_MODULES, DagPlan

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
# Measurements stay honest only if jobs never share the machine: each job takes every core.
JOB_THREADS = workflow.cores
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
    section = dict(config["data"])
    if section["name"] != "embedded":
        section.pop("embedded_rows")
    return canonical(section)


def generation_params():
    return canonical({k: v for k, v in config["generation"].items() if k != "prompts"})


TELEMETRY = canonical(config["telemetry"])

# The memory and disk plan: the plan rule's params, and the jobs' resources (built once, cached, no weights).
PLAN_INPUTS = plan_inputs(config)
# The plan reruns (in seconds) when its code or a shipped model config changes.
PLAN_SOURCES = sorted(
    [str(WORKFLOW_DIR / "scripts" / "ftcompare" / name) for name in PLAN_MODULES]
    + [str(p) for p in (WORKFLOW_DIR / "config" / "models").glob("*.json")]
)
DAG_PLAN = DagPlan(PLAN_INPUTS, cache_dir=Path(".snakemake") / "ftcompare", search_dirs=[Path.cwd()])


def train_mem_mb(wildcards):
    return DAG_PLAN.train_mem_mb(wildcards.run)


def train_disk_mb(wildcards):
    return DAG_PLAN.train_disk_mb(wildcards.run)


def load_mem_mb(wildcards):
    return DAG_PLAN.load_mem_mb()


def base_model_disk_mb(wildcards):
    return DAG_PLAN.base_model_disk_mb()
