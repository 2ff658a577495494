"""The measures the comparison summarises per run, with the words and units its sentences and tables use."""

import math
from dataclasses import dataclass

from ftcompare.metrics import RunMetrics


@dataclass(frozen=True)
class Measure:
    key: str  # the name in summary.json and the tables
    noun: str  # as a verdict says it: "LoRA's held-out loss"
    unit: str
    field: str  # the RunMetrics field it comes from
    more: str = "higher"  # how a verdict says "greater than" for it
    less: str = "lower"


MEASURES = [
    Measure("eval_loss", "held-out loss", "nats", "eval_loss"),
    Measure("final_train_loss", "final training loss", "nats", "final_train_loss"),
    Measure("mean_train_loss", "mean training loss", "nats", "mean_train_loss"),
    Measure("train_runtime_s", "training time", "s", "train_runtime_s", "longer", "shorter"),
    Measure("train_samples_per_s", "throughput", "samples/s", "train_samples_per_s"),
    Measure("train_tokens_per_s", "token throughput", "tokens/s", "train_tokens_per_s"),
    Measure("peak_memory_mb", "peak memory", "MB", "peak_memory_mb"),
    Measure("energy_j", "energy", "J", "energy_j"),
    Measure("tokens_seen", "number of tokens trained on", "tokens", "tokens_seen", "larger", "smaller"),
    Measure("flops", "training compute", "FLOPs", "train_flops"),
]
MEASURE_BY_KEY = {measure.key: measure for measure in MEASURES}

METHOD_NAMES = {"lora": "LoRA", "qlora": "QLoRA", "full": "full fine-tuning"}


def measure_values(metrics: RunMetrics | None) -> dict:
    """Every measure of one run (None where it was not measured or the run has no metrics)."""
    return {measure.key: getattr(metrics, measure.field, None) if metrics else None for measure in MEASURES}


def arm_name(arm: str, method: str) -> str:
    """An arm as a sentence names it: "LoRA", or "LoRA (r=32)" for a sweep's arm "lora r=32"."""
    name = METHOD_NAMES.get(method, method)
    rest = arm[len(method) :].strip() if arm.startswith(method) else arm
    return f"{name} ({rest})" if rest else name


def rate_text(rate: float | None) -> str | None:
    """A learning rate as people write it: 3e-4, 1e-5, 2.5e-3."""
    if rate is None or rate == 0 or not math.isfinite(rate):
        return None if rate is None else str(rate)
    mantissa, exponent = f"{rate:.2e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"
