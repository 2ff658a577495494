"""The memory and disk plan: for every run, from the config alone, what training will hold per device and
write to disk, and whether that fits the devices it may get. What each figure means and where its formula
comes from: docs/plan.md.

The model is built on the meta device (ftcompare.meta_model: shapes and dtypes, no weights), so the
counts are transformers' and PEFT's own. Per run:
- weights: every parameter in its dtype (base_model.dtype; PEFT keeps LoRA weights in fp32);
- gradients: one per trainable parameter, in its dtype;
- optimizer states: ftcompare.optimizer_states, per `training.optim`;
- autocast copies: under bf16/fp16 autocast over fp32 weights, the 16-bit copy of each linear weight that
  the backward keeps (autocast caches the trained ones; a frozen one's copy is kept for its input's
  gradient). The fp32 weights stay the master copy: the Trainer keeps no second one;
- activations: ftcompare.activations, for per_device_train_batch_size x max_seq_length (the longest a
  batch can be), with the run's gradient checkpointing (the other choice is given beside it).
Their sum is the run's peak, which the strategy divides over its devices (one device today). A checkpoint
on disk is the saved model (the adapter alone for LoRA) plus the optimizer states; save_total_limit of
them are kept, one more while a new one is written.
"""

import csv
import io
from dataclasses import dataclass, replace

from ftcompare.activations import ActivationShape, estimate_activations
from ftcompare.config import canonical, config_hash, run_settings
from ftcompare.errors import FtcompareError
from ftcompare.meta_model import DTYPE_BYTES, MetaModel, ParameterInfo
from ftcompare.model_config import ModelConfig, find_model_config
from ftcompare.optimizer_states import optimizer_states

SCHEMA_VERSION = 1
GIB = 2**30
# Planned bytes up to this share of a device "fit"; the rest is for the CUDA/HIP context, kernels'
# workspaces and the caching allocator's fragmentation, none of which the plan counts.
USABLE_FRACTION = 0.9
COMMON_DEVICES = (("MI250 GCD", 64), ("H100/A100", 80), ("H200", 141))
# A checkpoint's files besides model and optimizer: scheduler, RNG and trainer state, tokenizer.
CHECKPOINT_EXTRAS = 16 * 2**20
# Methods that load the base weights quantized, and how (QLoRA arrives as `method: qlora`).
QUANTIZATION = {"qlora": "nf4"}
NF4_BLOCK = 64  # bitsandbytes' 4-bit blocks; double quantization stores their absmax in 8 bits
VERDICTS = ("fits", "tight", "paged", "does not fit", "unknown")


@dataclass(frozen=True)
class Strategy:
    """How a run uses its devices. "single": one device holds everything. "fsdp": weights, gradients and
    optimizer states sharded over `devices`, activations not. "ddp": a full replica on each device.
    "device_map": the layers, with their gradients, states and activations, spread over `devices`."""

    name: str = "single"
    devices: int = 1


def run_strategy(settings: dict) -> Strategy:
    """The devices a run trains on and how: training.strategy and training.devices."""
    training = settings["training"]
    return Strategy(training["strategy"], training["devices"])


@dataclass(frozen=True)
class Options:
    """The settings the memory depends on, resolved for the device kind the plan is for."""

    method: str
    optim: str
    batch: int
    seq: int
    gradient_checkpointing: bool
    mixed_precision: str | None  # "bf16", "fp16" or None
    attention: str
    lm_head_loss: str
    padding_mask: bool
    device_kind: str  # "cuda" (any GPU, ROCm included) or "cpu"
    quantization: str | None = None


def run_options(settings: dict, device_kind: str) -> Options:
    training = settings["training"]
    bf16 = training["bf16"]
    if bf16 == "auto":  # as ftcompare.speed_options resolves it: on a GPU, taken to support bf16
        bf16 = device_kind == "cuda"
    mixed = "bf16" if bf16 else ("fp16" if training["fp16"] else None)
    return Options(
        method=settings["method"],
        optim=training["optim"],
        batch=training["per_device_train_batch_size"],
        seq=training["max_seq_length"],
        gradient_checkpointing=training["gradient_checkpointing"],
        mixed_precision=mixed,
        attention=training["attn_implementation"],
        lm_head_loss=training["lm_head_loss"],
        padding_mask=not training["drop_padding_mask"],
        device_kind=device_kind,
        quantization=QUANTIZATION.get(settings["method"]),
    )


@dataclass(frozen=True)
class Memory:
    """Bytes one training step holds, by what holds them (None: unknown)."""

    weights: int
    gradients: int
    optimizer_states: int | None
    optimizer_pageable: int
    autocast_copies: int
    activations: int
    activations_without_checkpointing: int
    activations_with_checkpointing: int
    largest_layer: int  # one decoder layer's weights: what FSDP gathers at a time

    @property
    def total(self) -> int | None:
        if self.optimizer_states is None:
            return None
        return self.weights + self.gradients + self.optimizer_states + self.autocast_copies + self.activations


def weight_bytes(parameter: ParameterInfo, quantization: str | None) -> float:
    """The bytes one parameter's weights take once loaded. The one place a quantized load is accounted for.

    nf4 (QLoRA's bitsandbytes load): the base model's linear weights in 4 bits plus, per block of 64, an
    absmax stored in 8 bits with one fp32 constant per 256 blocks (double quantization); every other
    weight in fp32, as peft.prepare_model_for_kbit_training casts them.
    """
    if quantization is None:
        return parameter.bytes
    if quantization == "nf4":
        if parameter.role == "linear":
            blocks = parameter.numel / NF4_BLOCK
            return parameter.numel / 2 + blocks + blocks / 256 * 4
        return parameter.numel * 4
    raise FtcompareError(f"the plan knows no quantization {quantization!r}")


def memory(meta: MetaModel, options: Options) -> Memory:
    parameters = meta.parameters
    weights = round(sum(weight_bytes(p, options.quantization) for p in parameters))
    gradients = sum(p.bytes for p in parameters if p.trainable)
    states = optimizer_states(options.optim, parameters)
    weight_dtype_bytes = DTYPE_BYTES[meta.dtype]
    autocast = options.mixed_precision is not None and weight_dtype_bytes == 4 and options.quantization is None
    copies = 0
    if autocast:
        kept = ("linear", "adapter", "head") if options.lm_head_loss == "full_logits" else ("linear", "adapter")
        copies = 2 * sum(p.numel for p in parameters if p.role in kept)
    estimates = {
        checkpointing: estimate_activations(activation_shape(meta, options, checkpointing))
        for checkpointing in (False, True)
    }
    largest_layer = max(_layer_bytes(parameters).values(), default=0)
    return Memory(
        weights=weights,
        gradients=gradients,
        optimizer_states=states.bytes,
        optimizer_pageable=states.pageable_bytes,
        autocast_copies=copies,
        activations=estimates[options.gradient_checkpointing].total,
        activations_without_checkpointing=estimates[False].total,
        activations_with_checkpointing=estimates[True].total,
        largest_layer=largest_layer,
    )


def per_device(mem: Memory, strategy: Strategy) -> tuple[int | None, int]:
    """(bytes on each device, of which pageable) under `strategy`."""
    if mem.total is None:
        return None, 0
    k = strategy.devices
    if strategy.name == "device_map" and k > 1:
        # Whole layers per device: an even share, give or take the largest layer.
        return -(-mem.total // k) + mem.largest_layer, -(-mem.optimizer_pageable // k)
    if strategy.name != "fsdp" or k == 1:
        return mem.total, mem.optimizer_pageable
    sharded = mem.weights + mem.gradients + mem.optimizer_states + mem.autocast_copies
    # Each device gathers the full weights of the layer it runs and prefetches the next one.
    gathered = 2 * mem.largest_layer
    return -(-sharded // k) + gathered + mem.activations, -(-mem.optimizer_pageable // k)


def activation_shape(meta: MetaModel, options: Options, checkpointing: bool) -> ActivationShape:
    c = meta.config
    hidden, heads = c["hidden_size"], c["num_attention_heads"]
    layers = c["num_hidden_layers"]
    quantized = options.quantization is not None
    weight_bytes_ = 4 if quantized else DTYPE_BYTES[meta.dtype]
    autocast_bytes = None
    if options.mixed_precision is not None and weight_bytes_ == 4 or quantized:
        autocast_bytes = 2  # QLoRA's layers compute in bf16 (its compute dtype) over fp32 norms and embeddings
    return ActivationShape(
        batch=options.batch,
        seq=options.seq,
        hidden=hidden,
        intermediate=c["intermediate_size"],
        layers=layers,
        heads=heads,
        kv_heads=c.get("num_key_value_heads") or heads,
        head_dim=c.get("head_dim") or hidden // heads,
        vocab=c["vocab_size"],
        method="full" if options.method == "full" else "lora",
        weight_bytes=weight_bytes_,
        autocast_bytes=autocast_bytes,
        attention=options.attention,
        lm_head_loss=options.lm_head_loss,
        gradient_checkpointing=checkpointing,
        padding_mask=options.padding_mask,
        mask_bytes=1 if options.device_kind == "cuda" else 4,
        adapted=meta.adapted[: len(meta.adapted) // layers] if meta.adapted else [],
    )


def _layer_bytes(parameters: list[ParameterInfo]) -> dict[str, int]:
    """Weight bytes per decoder layer, keyed by the layer's name prefix (…layers.N)."""
    layers: dict[str, int] = {}
    for p in parameters:
        parts = p.name.split(".")
        if "layers" in parts:
            index = parts.index("layers")
            if index + 1 < len(parts) and parts[index + 1].isdigit():
                key = ".".join(parts[: index + 2])
                layers[key] = layers.get(key, 0) + p.bytes
    return layers


# ------------------------------------------------------------------------------------------------
# Disk


def disk(meta: MetaModel, options: Options, mem: Memory, save_total_limit: int) -> dict:
    if options.method == "full":
        model_out = sum(p.bytes for p in meta.parameters)
    else:
        model_out = sum(p.bytes for p in meta.parameters if p.trainable)
    checkpoint = None if mem.optimizer_states is None else model_out + mem.optimizer_states + CHECKPOINT_EXTRAS
    return {
        "base_model_bytes": sum(p.bytes for p in meta.parameters if p.role != "adapter") + CHECKPOINT_EXTRAS,
        "model_output_bytes": model_out + CHECKPOINT_EXTRAS,
        "checkpoint_bytes": checkpoint,
        "checkpoints_kept": save_total_limit,
        "checkpoints_kept_bytes": None if checkpoint is None else save_total_limit * checkpoint,
        "checkpoints_peak_bytes": None if checkpoint is None else (save_total_limit + 1) * checkpoint,
    }


# ------------------------------------------------------------------------------------------------
# Whether it fits


def verdict(need: int | None, pageable: int, memory_bytes: float | None) -> str:
    """fits: within USABLE_FRACTION of the device; tight: within the device, in the part the plan leaves
    to the runtime; paged: only with the paged optimizer's states moved to host memory (slow); does not
    fit; unknown: a figure is missing."""
    if need is None or memory_bytes is None:
        return "unknown"
    if need <= USABLE_FRACTION * memory_bytes:
        return "fits"
    if need <= memory_bytes:
        return "tight"
    if pageable and need - pageable <= USABLE_FRACTION * memory_bytes:
        return "paged"
    return "does not fit"


def device_verdicts(need: int | None, pageable: int, device_memory_gb: float | None) -> list[dict]:
    """The verdict on the configured device (plan.device_memory_gb) if any, then on the common ones."""
    devices = [("plan.device_memory_gb", device_memory_gb)] if device_memory_gb else []
    devices += list(COMMON_DEVICES)
    return [{"device": name, "memory_gb": gb, "verdict": verdict(need, pageable, gb * GIB)} for name, gb in devices]


def alternatives(meta_for, options: Options, strategy: Strategy, base: Memory) -> list[dict]:
    """Changes that lower the per-device figure, each with what it would plan: the ones a refusal offers.

    `meta_for(method)` gives the model of "full" or "lora" (the run's LoRA config, else the global one).
    """
    found = []

    def add(change: str, opts: Options, strat: Strategy = strategy):
        mem = memory(meta_for(opts.method), opts)
        need, pageable = per_device(mem, strat)
        current, _ = per_device(base, strategy)
        if need is not None and (current is None or need < current):
            found.append({"change": change, "per_device_bytes": need, "pageable_bytes": pageable})

    if not options.gradient_checkpointing:
        add("training.gradient_checkpointing: true", replace(options, gradient_checkpointing=True))
    if options.mixed_precision is None and options.quantization is None:
        add("training.bf16: true", replace(options, mixed_precision="bf16"))
        if not options.gradient_checkpointing:
            add(
                "training.bf16: true and gradient_checkpointing: true",
                replace(options, mixed_precision="bf16", gradient_checkpointing=True),
            )
    if "8bit" not in options.optim and "4bit" not in options.optim:
        add("training.optim: paged_adamw_8bit", replace(options, optim="paged_adamw_8bit"))
    if options.method == "full":
        add("method: lora", replace(options, method="lora"))
    if options.quantization is None:
        # QLoRA as peft.prepare_model_for_kbit_training sets it up: gradient checkpointing on.
        add(
            "QLoRA (a 4-bit NF4 base under the LoRA adapter)",
            replace(options, method="lora", quantization="nf4", gradient_checkpointing=True),
        )
    for k in (2, 4, 8):
        add(f"FSDP over {k} GPUs", options, Strategy("fsdp", k))
    return found


# ------------------------------------------------------------------------------------------------
# The plan of a config


def plan_inputs(config: dict, runs: list[str] | None = None) -> dict:
    """What the plan depends on: the plan rule's params, and the DAG-time cache's key. `runs`: only those."""
    runs = list(config["runs"]) if runs is None else runs
    base_model = dict(config["base_model"])
    if base_model["name"] != "embedded":
        base_model.pop("embedded")
    return canonical(
        {
            "base_model": base_model,
            "device": config["device"],
            "trust_remote_code": config["trust_remote_code"],
            "plan": config["plan"],
            "runs": {run: run_settings(config, run) for run in runs},
            "run_order": runs,
            "global_lora": config["lora"],
        }
    )


def plan_document(inputs: dict, search_dirs=(), allow_download: bool = False) -> dict:
    """plan.json for `inputs` (plan_inputs of a config): every run's plan, or why it has none."""
    device_kind = "cpu" if inputs["device"] == "cpu" else "cuda"
    section = inputs["plan"]
    try:
        model_config = find_model_config(inputs["base_model"], search_dirs, allow_download)
        why = None
    except FtcompareError as error:
        model_config, why = None, str(error)
    metas: dict = {}

    def meta_for(method: str, lora: dict | None):
        key = (method, repr(canonical(lora)) if lora else None)
        if key not in metas:
            from ftcompare.meta_model import build_meta_model

            adapter = "lora" if method in QUANTIZATION else method
            metas[key] = build_meta_model(
                model_config.values, adapter, lora, inputs["base_model"]["dtype"], inputs["trust_remote_code"]
            )
        return metas[key]

    runs = {}
    for run in inputs["run_order"]:
        settings = inputs["runs"][run]
        if model_config is None:
            runs[run] = _unknown_run(run, settings, why)
            continue
        try:
            runs[run] = _plan_run(run, settings, model_config, meta_for, device_kind, section, inputs["global_lora"])
        except FtcompareError as error:
            runs[run] = _unknown_run(run, settings, str(error))
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            # transformers or PEFT refusing the model or adapter (a target module the model lacks): the
            # train job will say so; the plan, which the DAG also reads, says it has no figure.
            runs[run] = _unknown_run(run, settings, f"the model could not be built: {type(error).__name__}: {error}")
    return {
        "schema_version": SCHEMA_VERSION,
        "device_memory_gb": section["device_memory_gb"],
        "try_anyway": section["try_anyway"],
        "usable_fraction": USABLE_FRACTION,
        "device_kind": device_kind,
        "runs": runs,
    }


def _plan_run(
    run: str, settings: dict, model_config: ModelConfig, meta_for, device_kind: str, section: dict, global_lora: dict
) -> dict:
    options = run_options(settings, device_kind)
    lora = settings.get("lora") or global_lora  # a full run's LoRA alternative uses the global section
    meta = meta_for(settings["method"], settings.get("lora"))
    strategy = run_strategy(settings)
    mem = memory(meta, options)
    need, pageable = per_device(mem, strategy)
    states = optimizer_states(options.optim, meta.parameters)
    return {
        "run": run,
        "method": settings["method"],
        "status": "planned",
        "why": None,
        "settings_hash": settings_hash(settings),
        "model": {
            "source": model_config.source,
            "model_type": meta.model_type,
            "dtype": meta.dtype,
            "quantization": options.quantization,
        },
        "parameters": {"total": meta.total, "trainable": meta.trainable},
        "options": {
            "optim": options.optim,
            "per_device_train_batch_size": options.batch,
            "max_seq_length": options.seq,
            "gradient_checkpointing": options.gradient_checkpointing,
            "mixed_precision": options.mixed_precision,
            "attn_implementation": options.attention,
            "lm_head_loss": options.lm_head_loss,
            "device_kind": device_kind,
        },
        "optimizer": {"name": options.optim, "pageable": states.pageable, "note": states.note},
        "bytes": {
            "weights": mem.weights,
            "gradients": mem.gradients,
            "optimizer_states": mem.optimizer_states,
            "autocast_copies": mem.autocast_copies,
            "activations": mem.activations,
            "activations_without_checkpointing": mem.activations_without_checkpointing,
            "activations_with_checkpointing": mem.activations_with_checkpointing,
            "total": mem.total,
        },
        "strategy": {"name": strategy.name, "devices": strategy.devices},
        "per_device_bytes": need,
        "pageable_bytes": pageable,
        "fits": device_verdicts(need, pageable, section["device_memory_gb"]),
        "alternatives": alternatives(
            lambda method: meta_for(method, lora if method != "full" else None), options, strategy, mem
        ),
        "disk": disk(meta, options, mem, settings["training"]["save_total_limit"]),
        "host": {"load_bytes": sum(p.bytes for p in meta.parameters)},
    }


def _unknown_run(run: str, settings: dict, why: str) -> dict:
    return {
        "run": run,
        "method": settings["method"],
        "status": "unknown",
        "why": why,
        "settings_hash": settings_hash(settings),
        "per_device_bytes": None,
        "pageable_bytes": 0,
        "fits": device_verdicts(None, 0, None),
        "alternatives": [],
    }


def settings_hash(settings: dict) -> str:
    return config_hash(canonical(settings))


def run_plan(document: dict, run: str) -> dict:
    try:
        return document["runs"][run]
    except (KeyError, TypeError):
        raise FtcompareError(f"the plan has no run {run!r}; rerun the plan rule (snakemake --forcerun plan)") from None


# ------------------------------------------------------------------------------------------------
# The table: plan.csv and the log


CSV_COLUMNS = (
    "run",
    "method",
    "status",
    "total_params",
    "trainable_params",
    "dtype",
    "optim",
    "weights_gb",
    "gradients_gb",
    "optimizer_states_gb",
    "autocast_copies_gb",
    "activations_gb",
    "activations_without_checkpointing_gb",
    "activations_with_checkpointing_gb",
    "total_gb",
    "devices",
    "per_device_gb",
    "checkpoint_gb",
    "checkpoints_kept_gb",
    "fits",
)


def gb(value) -> float | None:
    return None if value is None else round(value / GIB, 2)


def csv_rows(document: dict) -> list[dict]:
    rows = []
    for plan in document["runs"].values():
        counts, sizes, disk_ = plan.get("parameters", {}), plan.get("bytes", {}), plan.get("disk", {})
        row = {
            "run": plan["run"],
            "method": plan["method"],
            "status": plan["status"],
            "total_params": counts.get("total"),
            "trainable_params": counts.get("trainable"),
            "dtype": plan.get("model", {}).get("dtype"),
            "optim": plan.get("options", {}).get("optim"),
            **{f"{key}_gb": gb(sizes.get(key)) for key in _BYTE_KEYS},
            "devices": plan.get("strategy", {}).get("devices"),
            "per_device_gb": gb(plan["per_device_bytes"]),
            "checkpoint_gb": gb(disk_.get("checkpoint_bytes")),
            "checkpoints_kept_gb": gb(disk_.get("checkpoints_kept_bytes")),
            "fits": "; ".join(f"{f['device']} ({f['memory_gb']} GB): {f['verdict']}" for f in plan["fits"]),
        }
        rows.append(row)
    return rows


_BYTE_KEYS = (
    "weights",
    "gradients",
    "optimizer_states",
    "autocast_copies",
    "activations",
    "activations_without_checkpointing",
    "activations_with_checkpointing",
    "total",
)


def to_csv(document: dict) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in csv_rows(document):
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return buffer.getvalue()


def summary_lines(document: dict) -> list[str]:
    """One line per run for the log: its per-device figure, the parts, and the verdicts."""
    lines = []
    for plan in document["runs"].values():
        if plan["status"] != "planned":
            lines.append(f"run {plan['run']}: no plan ({plan['why']})")
            continue
        b = plan["bytes"]
        verdicts = ", ".join(f"{f['device']} ({f['memory_gb']} GB) {f['verdict']}" for f in plan["fits"])
        total = _gb_text(plan["per_device_bytes"])
        lines.append(
            f"run {plan['run']} ({plan['method']}): {plan['parameters']['trainable']:,} of "
            f"{plan['parameters']['total']:,} parameters train; per device {total} = weights "
            f"{_gb_text(b['weights'])} + gradients {_gb_text(b['gradients'])} + optimizer "
            f"{_gb_text(b['optimizer_states'])} + autocast copies {_gb_text(b['autocast_copies'])} + activations "
            f"{_gb_text(b['activations'])}; checkpoint {_gb_text(plan['disk']['checkpoint_bytes'])}; {verdicts}"
        )
    return lines


def _gb_text(value) -> str:
    if value is None:
        return "unknown"
    return f"{value / GIB:.2f} GB" if value >= GIB else f"{value / 2**20:.2f} MB"


def plan_config(config: dict, search_dirs=(), allow_download: bool = False) -> dict:
    """plan.json for a validated config."""
    return plan_document(plan_inputs(config), search_dirs, allow_download)
