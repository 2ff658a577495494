# Config validation (against config/config.schema.yaml, defaults filled in) and path helpers.
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))

from ftcompare.config import ConfigError, canonical, config_hash, resolve_path, run_settings, validate_config
from ftcompare.job_devices import threads_for_job
from ftcompare.node_gpus import node_gpus
from ftcompare.sweep import best_model_candidates, model_names, run_table

# Jobs run in Snakemake's own environment unless it deploys theirs (--sdm conda: envs/*.yaml pin the
# packages); only then does a package missing here stop a job.
_deployment = workflow.deployment_settings
_JOBS_RUN_HERE = not (_deployment and _deployment.deployment_method)
from ftcompare.plan import plan_inputs
from ftcompare.plan_resources import PLAN_CACHE_DIR, PLAN_MODULES, DagPlan

try:
    _validated = validate_config(
        config, search_dirs=[Path.cwd(), Path(workflow.basedir)], check_packages=_JOBS_RUN_HERE
    )
except ConfigError as error:
    sys.stderr.write(f"ftcompare: {error}\nSee config/config.schema.yaml for every key and what it allows.\n")
    sys.exit(1)
config.clear()
config.update(_validated)

WORKFLOW_DIR = Path(workflow.basedir)
RESULTS = config["results_dir"]
# The selected runs (hand-written, then sweep points); the models that generate: the base, the hand-written
# runs, and `best-<method>` for each swept method (its generate job picks the run by held-out loss).
RUN_TABLE = run_table(config)
RUNS = list(config["runs"])
BEST_MODELS = best_model_candidates(config)
MODELS = model_names(config)
PROMPTS = str(resolve_path(config["generation"]["prompts"], [Path.cwd(), WORKFLOW_DIR]))
# The report rule reruns when its template, style, captions or library code change.
REPORT_SOURCES = sorted(
    str(p)
    for pattern in ("report/*.j2", "report/*.css", "report/*.rst", "scripts/ftcompare/report/*.py")
    for p in WORKFLOW_DIR.glob(pattern)
)


def _given(resource):
    """What the command line gave for a global resource (_cores: --cores, gpu: --resources gpu=N), or None."""
    return workflow.global_resources.get(resource).value


def job_threads(gpus):
    """A rule's `threads`, decided as each job is scheduled, so that no --cores (a cluster) is no error."""

    def threads(wildcards):
        return threads_for_job(_given("_cores"), _given("gpu"), gpus)

    return threads


# GPUs and threads per job (docs/gpu-node.md). A train or generate job takes USES_GPU GPUs from the node's
# pool: none with `device: cpu`, else one (with `auto` only where this machine has GPUs, so that a CPU-only
# machine schedules as before). A CPU job takes every core, so that no CPU measurement shares the
# machine; a GPU job under `--resources gpu=N` takes its share of the cores.
NODE_GPUS = node_gpus(os.environ) if config["device"] != "cpu" else None
USES_GPU = 0 if NODE_GPUS is None or (config["device"] == "auto" and not NODE_GPUS.devices) else 1
JOB_THREADS = job_threads(0)
GPU_JOB_THREADS = job_threads(USES_GPU)


def side_by_side_threads(wildcards):
    """evaluate and analyse_weights, whose times are no figure of the study: on a CPU, half the cores, so that
    two of these short jobs run side by side; with a GPU, a GPU job's threads."""
    threads = GPU_JOB_THREADS(wildcards)
    return threads if USES_GPU else max(1, threads // 2)


if USES_GPU and len(NODE_GPUS.devices) > 1 and _given("gpu") is None and workflow.local_exec:
    sys.stderr.write(
        f"ftcompare: {len(NODE_GPUS.devices)} GPUs and no `--resources gpu=N`: GPU jobs run one at a time; "
        f"`--resources gpu={len(NODE_GPUS.devices)}` runs one on each GPU at once (docs/gpu-node.md)\n"
    )


wildcard_constraints:
    run="|".join(map(re.escape, RUNS)),
    model="|".join(map(re.escape, MODELS)),


# Every params value goes through canonical(): Snakemake compares params with key order.
def train_params(wildcards):
    return canonical(run_settings(config, wildcards.run))


def run_gpus(wildcards):
    """GPUs a train job takes: its run's training.devices on a GPU machine, none on the CPU."""
    return USES_GPU * run_settings(config, wildcards.run)["training"]["devices"]


def run_method(wildcards):
    if wildcards.model in BEST_MODELS:
        return config["runs"][BEST_MODELS[wildcards.model][0]]["method"]
    return "base" if wildcards.model == "base" else config["runs"][wildcards.model]["method"]


def run_quantization(wildcards):
    """A qlora run's quantization: its generation dequantizes the same 4-bit base it trained on."""
    if run_method(wildcards) != "qlora" or wildcards.model in BEST_MODELS:
        return {}
    return canonical(run_settings(config, wildcards.model)["quantization"])


def best_candidates(wildcards):
    """A best-<method> model's candidate runs, each with its quantization ({} unless qlora); {} otherwise."""
    return canonical(
        {run: run_settings(config, run).get("quantization", {}) for run in BEST_MODELS.get(wildcards.model, [])}
    )


def model_inputs(wildcards):
    """What a generate or lm_eval job loads: the base model, and a run's model or a best-<method>'s candidates."""
    inputs = {"base_model": rules.base_model.output.model}
    if wildcards.model in BEST_MODELS:
        # In the order of best_candidates' (sorted) names: the job picks one by held-out loss.
        inputs["candidate_metrics"] = expand(rules.train.output.metrics, run=BEST_MODELS[wildcards.model])
        inputs["candidate_models"] = expand(rules.train.output.model, run=BEST_MODELS[wildcards.model])
    elif wildcards.model != "base":
        inputs["run_model"] = expand(rules.train.output.model, run=wildcards.model)[0]
    return inputs


def generate_inputs(wildcards):
    return {**model_inputs(wildcards), "prompts": PROMPTS}


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

# The memory and disk plan: the plan rule's params, and the jobs' resources (built once, cached, no weights).
PLAN_INPUTS = plan_inputs(config)
# The plan reruns (in seconds) when its code or a shipped model config changes.
PLAN_SOURCES = sorted(
    [str(WORKFLOW_DIR / "scripts" / "ftcompare" / name) for name in PLAN_MODULES]
    + [str(p) for p in (WORKFLOW_DIR / "config" / "models").glob("*.json")]
)
DAG_PLAN = DagPlan(PLAN_INPUTS, cache_dir=PLAN_CACHE_DIR, search_dirs=[Path.cwd()])


def train_mem_mb(wildcards):
    return DAG_PLAN.train_mem_mb(wildcards.run)


def train_disk_mb(wildcards):
    return DAG_PLAN.train_disk_mb(wildcards.run)


def load_mem_mb(wildcards):
    return DAG_PLAN.load_mem_mb()


def base_model_disk_mb(wildcards):
    return DAG_PLAN.base_model_disk_mb()


# Evaluation sets (rules/evaluate.smk): every model that exists before any choice among runs, the base and
# each run, is scored on the data's held-out split (`heldout`) and on each of eval_sets.
from ftcompare.eval_sets import eval_set_roles, eval_settings

EVAL_SETS = sorted(config["eval_sets"])
EVAL_SET_ROLES = eval_set_roles(config["eval_sets"])
EVALUATED_MODELS = ["base"] + RUNS


def evaluate_inputs(wildcards):
    """The model, and every evaluation set's Parquet file in EVAL_SET_ROLES' order (heldout first)."""
    inputs = {
        "base_model": rules.base_model.output.model,
        "eval_sets": [rules.prepare_data.output.eval]
        + expand(rules.prepare_eval_set.output.parquet, eval_set=EVAL_SETS),
    }
    if wildcards.model != "base":
        inputs["run_model"] = expand(rules.train.output.model, run=wildcards.model)[0]
    return inputs


# The lm_eval stage (rules/lm_eval.smk, docs/lm_eval.md): its tasks, their folder, its inputs and params.
LM_EVAL_TASKS = config["lm_eval"]["tasks"]
LM_EVAL_INCLUDE = (
    os.path.relpath(resolve_path(config["lm_eval"]["include_path"], [Path.cwd(), WORKFLOW_DIR]))
    if config["lm_eval"]["include_path"]
    else None
)
# A changed local task file reruns the stage.
LM_EVAL_TASK_FILES = (
    sorted(str(p) for p in Path(LM_EVAL_INCLUDE).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    if LM_EVAL_INCLUDE
    else []
)


def lm_eval_inputs(wildcards):
    return {**model_inputs(wildcards), "task_files": LM_EVAL_TASK_FILES}


wildcard_constraints:
    eval_set="|".join(map(re.escape, EVAL_SETS)) or "(?!)",


def evaluated_checkpoints(wildcards):
    """The folder of a run's checkpoints when the config keeps them, else "" (none are scored)."""
    if wildcards.model == "base" or not config["checkpoints"]["keep"]:
        return ""
    return f"{RESULTS}/checkpoints/{wildcards.model}"


# Weight analysis (rules/analyse_weights.smk): each run's weights against the base model's.
WEIGHT_ANALYSIS = config["weight_analysis"]["enabled"]


def analysis_inputs(wildcards):
    return {
        "base_model": rules.base_model.output.model,
        "run_model": expand(rules.train.output.model, run=wildcards.run)[0],
    }


def analysis_params():
    """The weight_analysis keys the measures depend on (`enabled` only decides whether the rule runs)."""
    return canonical({k: v for k, v in config["weight_analysis"].items() if k != "enabled"})


def analysis_quantization(wildcards):
    """A qlora run is analysed on the 4-bit base it trained against, dequantized, as it generates."""
    if config["runs"][wildcards.run]["method"] != "qlora":
        return {}
    return canonical(run_settings(config, wildcards.run)["quantization"])


def analysis_mem_mb(wildcards):
    """The model as loaded, and its float32 copy the analysis works on (3x a bfloat16 or float16 load)."""
    return (1 if config["base_model"]["dtype"] == "float32" else 3) * load_mem_mb(wildcards)


def lm_eval_params():
    return canonical({**config["lm_eval"], "include_path": LM_EVAL_INCLUDE})
