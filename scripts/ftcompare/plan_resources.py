"""Job resources from the plan, when Snakemake builds the DAG: host memory (mem_mb) and disk (disk_mb).

rules/common.smk asks on every Snakemake start, so the plan is built once per set of plan inputs, plan code
and model config.json, and kept in .snakemake/ftcompare/plan-<key>.json; later starts, and the plan job,
read that small file. Where the plan has no figure (the model's config.json is not here: the DAG never
touches the network), a rule keeps a fixed figure.
"""

import gc
import hashlib
import json
import logging
import os
from importlib import metadata
from pathlib import Path

from ftcompare.atomic import write_json
from ftcompare.errors import FtcompareError
from ftcompare.model_config import ModelConfigNotFound, find_model_config
from ftcompare.strict_json import loads

log = logging.getLogger("ftcompare.plan_resources")

MIB = 2**20
# Host memory besides the weights: Python, torch and its GPU libraries, the tokenizer, the data.
HOST_HEADROOM = 4 * 2**30
# TensorBoard events, logs and the run's small files beside its model and checkpoints.
RUN_FILES = 256 * MIB
# What the rules asked for before the plan, kept where the plan has no figure.
FALLBACK_MEM_MB = 16000
FALLBACK_DISK_MB = 50000
# The code whose changes make a cached plan stale.
PLAN_MODULES = ("plan.py", "activations.py", "optimizer_states.py", "meta_model.py", "model_config.py")
# Where the plans are kept: relative to the working directory (the DAG's and its jobs'), or where
# FTCOMPARE_PLAN_CACHE says. The tests share one folder across their many workdirs: a plan is keyed by all
# it depends on, and each fresh workdir would otherwise spend seconds importing transformers to plan again.
PLAN_CACHE_DIR = Path(os.environ.get("FTCOMPARE_PLAN_CACHE") or Path(".snakemake") / "ftcompare")


def cache_key(inputs: dict, search_dirs=()) -> str:
    """Of the plan inputs, the plan's code, transformers' and PEFT's versions, and the model's config.json as
    the plan finds it without the hub (or why it finds none): a changed config.json is a new plan."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode("utf-8"))
    for name in PLAN_MODULES:
        digest.update((here / name).read_bytes())
    for package in ("transformers", "peft"):
        digest.update(_version(package).encode("utf-8"))
    try:
        model_config = find_model_config(inputs["base_model"], search_dirs).values
    except ModelConfigNotFound as error:
        model_config = str(error)
    digest.update(json.dumps(model_config, sort_keys=True).encode("utf-8"))
    return digest.hexdigest()[:20]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def cached_plan_document(inputs: dict, cache_dir, search_dirs=()) -> dict:
    """plan_document(inputs, search_dirs) without the hub: read from cache_dir, or built and kept there."""
    path = Path(cache_dir) / f"plan-{cache_key(inputs, search_dirs)}.json"
    if path.is_file():
        try:
            return loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass  # a damaged cache file is rebuilt
    from ftcompare.plan import plan_document

    document = plan_document(inputs, search_dirs, allow_download=False)
    try:
        write_json(path, document)
    except OSError:
        pass  # a read-only working directory: plan again next time
    return document


def job_plan_document(inputs: dict, cache_dir, search_dirs=()) -> dict:
    """plan.json, as the plan job writes it. With the model's config.json here, the plan the DAG built for
    the job resources (planning again would import transformers and PEFT for seconds to write the same
    file); else a plan that asks the hub for config.json, unless it is offline."""
    try:
        find_model_config(inputs["base_model"], search_dirs)
    except ModelConfigNotFound:
        from ftcompare.plan import plan_document

        return plan_document(inputs, search_dirs, allow_download=True)
    return cached_plan_document(inputs, cache_dir, search_dirs)


class DagPlan:
    """The plan of a config as the DAG sees it, built on first use and cached on disk."""

    def __init__(self, inputs: dict, cache_dir, search_dirs=()):
        self.inputs = inputs
        self.cache_dir = Path(cache_dir)
        self.search_dirs = list(search_dirs)
        self._document = None

    @property
    def document(self) -> dict:
        if self._document is None:
            # Building the plan imports torch, transformers and PEFT into Snakemake's own process: the garbage
            # collector is kept off while they import and off their objects after (see ftcompare.script_runtime).
            gc.disable()
            try:
                self._document = self._load_or_build()
            finally:
                gc.freeze()
                gc.enable()
        return self._document

    def _load_or_build(self) -> dict:
        try:
            return cached_plan_document(self.inputs, self.cache_dir, self.search_dirs)
        except (FtcompareError, ImportError) as error:
            log.warning("no plan for the job resources (%s); the rules keep fixed figures", error)
            return {"runs": {}}

    def _run(self, run: str) -> dict:
        plan = self.document.get("runs", {}).get(run) or {}
        return plan if plan.get("status") == "planned" else {}

    def _any_run(self) -> dict:
        return next((self._run(run) for run in self.document.get("runs", {}) if self._run(run)), {})

    def train_mem_mb(self, run: str) -> int:
        """A GPU job's host holds the loaded model until it moves to the device; a CPU job holds all of training."""
        plan = self._run(run)
        if not plan:
            return FALLBACK_MEM_MB
        on_cpu = plan["options"]["device_kind"] == "cpu"
        need = plan["per_device_bytes"] if on_cpu else plan["host"]["load_bytes"]
        return FALLBACK_MEM_MB if need is None else _mb(need + HOST_HEADROOM)

    def train_disk_mb(self, run: str) -> int:
        """The checkpoints save_total_limit keeps, one more while a new one is written, and the saved model."""
        plan = self._run(run)
        peak = plan.get("disk", {}).get("checkpoints_peak_bytes")
        if peak is None:
            return FALLBACK_DISK_MB
        return _mb(peak + plan["disk"]["model_output_bytes"] + RUN_FILES)

    def load_mem_mb(self) -> int:
        """Host memory to load the base model (base_model, generate): its weights in base_model.dtype."""
        plan = self._any_run()
        return _mb(plan["host"]["load_bytes"] + HOST_HEADROOM) if plan else FALLBACK_MEM_MB

    def base_model_disk_mb(self) -> int:
        plan = self._any_run()
        return _mb(plan["disk"]["base_model_bytes"] + RUN_FILES) if plan else FALLBACK_DISK_MB


def _mb(value: float) -> int:
    """Snakemake's mem_mb and disk_mb are decimal megabytes (it derives mem_mib from them)."""
    return int(-(-value // 10**6))
