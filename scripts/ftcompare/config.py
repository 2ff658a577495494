"""Config validation against config/config.schema.yaml, defaults, and the settings of each run.

Kept free of torch and transformers imports: rules/common.smk calls it on every Snakemake start.
"""

import copy
import difflib
import hashlib
import json
from pathlib import Path

import jsonschema
import yaml

from ftcompare.errors import FtcompareError
from ftcompare.needed_packages import missing_for_lm_eval, missing_for_run
from ftcompare.prompts import PromptsError, load_prompts
from ftcompare.sweep import add_sweep_runs, select_runs

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "config.schema.yaml"
HELDOUT_SET = "heldout"  # the data's own held-out split, always an evaluation set (role target)
RUN_NAME_RULE = "letters, digits, '_', '.', '-' (at most 64, not starting with a punctuation mark), and not 'base'"


class ConfigError(FtcompareError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        header = f"invalid config ({len(problems)} problem{'s' if len(problems) != 1 else ''}):"
        super().__init__("\n".join([header] + [f"  - {p}" for p in problems]))


def load_schema(path=SCHEMA_PATH) -> dict:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def validate_config(config: dict, search_dirs=(".",), schema: dict | None = None, check_packages=True) -> dict:
    """Return a validated copy of `config` with defaults filled in, or raise ConfigError.

    Relative paths in the config (the prompts file) are looked up in `search_dirs`, in order; the
    prompts file is read and checked here too, so that a bad one stops the workflow before any job.
    With `check_packages`, a run whose method or optimizer needs a package this environment lacks is
    refused too (the jobs run in this environment).
    """
    schema = schema or load_schema()
    if not isinstance(config, dict):
        raise ConfigError([f"the config must be a mapping of keys, got {type(config).__name__}"])
    validator = jsonschema.Draft202012Validator(schema)
    problems = [
        _describe(error, schema)
        for error in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    ]
    if problems:
        raise ConfigError(_unique(problems))
    filled = copy.deepcopy(config)
    _fill_defaults(filled, schema, schema, path=())
    # Sweep points become ordinary runs, then the runs `select_runs` leaves out go before any check of them.
    problems = add_sweep_runs(filled, schema) or select_runs(filled)
    if problems:
        raise ConfigError(problems)
    problems = _check_semantics(filled, [Path(d) for d in search_dirs], check_packages)
    if problems:
        raise ConfigError(problems)
    return filled


def run_settings(config: dict, run: str) -> dict:
    """The settings one run trains with: method, seed, training (lora for LoRA and QLoRA runs, and
    quantization for QLoRA runs).

    The global `training`, `lora` and `quantization` sections, overridden key by key by the run's
    own. These are the train rule's params, so a change reruns only the runs it reaches.
    """
    spec = config["runs"][run]
    settings = {
        "run": run,
        "method": spec["method"],
        "seed": spec.get("seed", config["seed"]),
        "training": {**config["training"], **spec.get("training", {})},
    }
    if spec["method"] in ("lora", "qlora"):
        settings["lora"] = {**config["lora"], **spec.get("lora", {})}
    if spec["method"] == "qlora":
        settings["quantization"] = {**config["quantization"], **spec.get("quantization", {})}
    return settings


def canonical(value):
    """`value` with every mapping's keys sorted, recursively.

    Snakemake compares params with key order, so a reordered config file would otherwise rerun
    everything; rule params go through this.
    """
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value


def config_hash(config: dict) -> str:
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def resolve_path(path, search_dirs) -> Path:
    """`path` itself if absolute, else the first of search_dirs/path that exists (else the first)."""
    path = Path(path)
    if path.is_absolute():
        return path
    candidates = [Path(d) / path for d in search_dirs]
    return next((c for c in candidates if c.exists()), candidates[0])


def _check_semantics(config: dict, search_dirs: list[Path], check_packages: bool = True) -> list[str]:
    problems = []
    prompts = config["generation"]["prompts"]
    prompts_path = resolve_path(prompts, search_dirs)
    if not prompts_path.is_file():
        problems.append(
            f"generation.prompts = {prompts!r}: no such file "
            f"(a YAML file with a `prompts:` list, like config/prompts.yaml)"
        )
    else:
        try:
            load_prompts(prompts_path)
        except PromptsError as error:
            problems.append(f"generation.prompts = {prompts!r}: {error.reason}")
    embedded = config["base_model"]["embedded"]
    if embedded["hidden_size"] % embedded["num_attention_heads"]:
        problems.append(
            f"base_model.embedded.hidden_size = {embedded['hidden_size']}: must be a multiple of "
            f"num_attention_heads ({embedded['num_attention_heads']})"
        )
    if embedded["num_attention_heads"] % embedded["num_key_value_heads"]:
        problems.append(
            f"base_model.embedded.num_key_value_heads = {embedded['num_key_value_heads']}: must divide "
            f"num_attention_heads ({embedded['num_attention_heads']})"
        )
    if embedded["pretrain_seq_length"] > embedded["max_position_embeddings"]:
        problems.append(
            f"base_model.embedded.pretrain_seq_length = {embedded['pretrain_seq_length']}: must be <= "
            f"max_position_embeddings ({embedded['max_position_embeddings']})"
        )
    for run in config["runs"]:
        training = run_settings(config, run)["training"]
        if check_packages:
            problems += missing_for_run(run, config["runs"][run]["method"], training["optim"])
        if training["fp16"] and training["bf16"]:
            problems.append(f"runs.{run}: training.fp16 and training.bf16 are both true; choose one")
        if training["drop_padding_mask"] and training["lm_head_loss"] != "full_logits":
            problems.append(
                f"runs.{run}: training.drop_padding_mask: true needs lm_head_loss: full_logits (TRL's "
                f"chunked head reads the mask to count tokens); set one of them"
            )
        problems += _strategy_problems(run, training, config["device"])
    problems += _lm_eval_problems(config["lm_eval"], search_dirs)
    if check_packages:
        problems += missing_for_lm_eval(config["lm_eval"]["tasks"])
    problems += _eval_set_problems(config["eval_sets"])
    return problems


def _eval_set_problems(eval_sets: dict) -> list[str]:
    """Names the evaluate rule can use, and sources that can be read (the job checks their contents)."""
    import re

    from ftcompare.data import DataError, source_kind

    problems = []
    for name, spec in eval_sets.items():
        if name == HELDOUT_SET or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
            problems.append(
                f"eval_sets: the name {name!r} is not allowed: use letters, digits, '_', '.', '-' (at most 64, "
                f"not starting with a punctuation mark), and not {HELDOUT_SET!r} (the data's own held-out split)"
            )
            continue
        try:
            kind = source_kind(spec["source"], f"eval_sets.{name}")
        except DataError as error:
            problems.append(str(error).replace(f"eval_sets.{name}.name =", f"eval_sets.{name}.source ="))
            continue
        if spec["subset"] is not None and kind != "hub":
            problems.append(
                f"eval_sets.{name}.subset = {spec['subset']!r}: only a hub data set has subsets "
                f"(eval_sets.{name}.source is {kind.replace('_', ' ')}); remove it"
            )
    return problems


def _lm_eval_problems(section: dict, search_dirs: list[Path]) -> list[str]:
    """A missing include_path; task names are lm-eval's to judge, in the stage's job (its index is slow)."""
    include_path = section["include_path"]
    if include_path is not None and not resolve_path(include_path, search_dirs).is_dir():
        return [
            f"lm_eval.include_path = {include_path!r}: no such folder (a folder of lm-eval task YAMLs, "
            f"like config/lm_eval_tasks)"
        ]
    return []


def _strategy_problems(run: str, training: dict, device: str) -> list[str]:
    """What the config alone shows about a run's devices; the job checks what torch sees (ftcompare.parallel)."""
    strategy, devices = training["strategy"], training["devices"]
    if strategy == "single" and devices > 1:
        return [
            f"runs.{run}: training.devices = {devices} needs a strategy that uses them: training.strategy: "
            f"ddp, fsdp or device_map (single trains on one device)"
        ]
    if strategy != "single" and devices < 2:
        return [f"runs.{run}: training.strategy: {strategy} spreads a run over devices; set training.devices >= 2"]
    if strategy in ("fsdp", "device_map") and device == "cpu":
        return [
            f"runs.{run}: training.strategy: {strategy} needs GPUs, and device is cpu; on a CPU use "
            f"strategy: ddp (gloo processes) or single"
        ]
    return []


def _describe(error: jsonschema.ValidationError, schema: dict) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    where = f"`{path}`" if path else "the config"
    value = error.instance
    kind = error.validator
    if kind == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(value) - set(allowed)) if isinstance(value, dict) else []
        keys = ", ".join(f"`{'.'.join(filter(None, [path, str(k)]))}`" for k in extra)
        close = sorted({m for k in extra for m in difflib.get_close_matches(str(k), allowed, n=2)})
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        return f"unknown key {keys}{hint}; allowed here: {_short_list(allowed)}"
    if kind == "propertyNames" or (
        error.absolute_path and error.absolute_path[0] == "runs" and kind in ("pattern", "not")
    ):
        return f"run name {value!r} is not allowed: use {RUN_NAME_RULE}"
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        hint = " (lora, qlora or full)" if missing == "method" else ""
        return f"{where}: missing key `{missing}`{hint}"
    if kind == "enum":
        return f"{where} = {value!r}: allowed values are {_short_list([str(v) for v in error.validator_value])}"
    if kind == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return f"{where} = {value!r}: must be of type {expected}"
    bounds = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
    if kind in bounds:
        return f"{where} = {value!r}: must be {bounds[kind]} {error.validator_value}"
    if kind in ("minLength", "minItems", "minProperties"):
        return f"{where} = {value!r}: must not be empty"
    if kind == "oneOf" and path == "sweep.seeds":
        return f"{where} = {value!r}: must be a count (>= 1) or a list of distinct seeds (integers >= 0)"
    if kind == "oneOf" and path.endswith(".learning_rates"):
        return f"{where} = {value!r}: must be a list of distinct positive numbers or {{from, to, points}} (points >= 2)"
    if kind == "oneOf" and path.endswith("target_modules"):
        return f"{where} = {value!r}: must be null (PEFT's default) or a non-empty list of module names"
    return f"{where} = {value!r}: {error.message}"


_OVERRIDES = {("runs",), ("sweep", "methods")}


def _fill_defaults(instance: dict, node: dict, schema: dict, path: tuple) -> None:
    node = _resolve(node, schema)
    for key, sub in node.get("properties", {}).items():
        sub = _resolve(sub, schema)
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        # A run's (and a swept method's) `training` and `lora` are overrides: sparse, they keep the global values.
        if path + (key,) in _OVERRIDES:
            continue
        if isinstance(instance.get(key), dict):
            _fill_defaults(instance[key], sub, schema, path + (key,))
    # The entries of a mapping of named items (eval_sets) take their own defaults too.
    items = node.get("additionalProperties")
    if isinstance(items, dict):
        for key, value in instance.items():
            if key not in node.get("properties", {}) and isinstance(value, dict):
                _fill_defaults(value, items, schema, path + (key,))


def _resolve(node: dict, schema: dict) -> dict:
    while "$ref" in node:
        target = schema
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _short_list(items: list[str], limit: int = 25) -> str:
    """`items` joined, or the first 8 of a longer list (the optimizers); the config's own keys fit whole."""
    if len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:8]) + f", ... ({len(items)} in all: see config/config.schema.yaml)"


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
