"""The packages a config value needs beyond transformers itself, so that a config asking for one that is
not installed is refused before any job, not at a run's first training step.

Looked up with importlib.util.find_spec: nothing is imported, and Snakemake starts as fast as before.
"""

import importlib.util

# (module to look for, what to install)
BITSANDBYTES = ("bitsandbytes", "bitsandbytes")

# The optimizers whose transformers handler imports a package of its own (transformers/trainer_optimizer.py).
OPTIMIZER_PACKAGES = {
    **dict.fromkeys(
        [
            "adamw_bnb_8bit",
            "adamw_8bit",
            "paged_adamw_32bit",
            "paged_adamw_8bit",
            "ademamix",
            "ademamix_8bit",
            "paged_ademamix_32bit",
            "paged_ademamix_8bit",
            "lion_32bit",
            "lion_8bit",
            "paged_lion_32bit",
            "paged_lion_8bit",
            "rmsprop_bnb",
            "rmsprop_bnb_8bit",
            "rmsprop_bnb_32bit",
        ],
        BITSANDBYTES,
    ),
    **dict.fromkeys(
        [
            "galore_adamw",
            "galore_adamw_8bit",
            "galore_adafactor",
            "galore_adamw_layerwise",
            "galore_adamw_8bit_layerwise",
            "galore_adafactor_layerwise",
        ],
        ("galore_torch", "galore-torch"),
    ),
    **dict.fromkeys(["apollo_adamw", "apollo_adamw_layerwise"], ("apollo_torch", "apollo-torch")),
    **dict.fromkeys(["adamw_torch_4bit", "adamw_torch_8bit"], ("torchao", "torchao")),
    **dict.fromkeys(
        ["schedule_free_radam", "schedule_free_adamw", "schedule_free_sgd"], ("schedulefree", "schedulefree")
    ),
    **dict.fromkeys(["lomo", "adalomo"], ("lomo_optim", "lomo-optim")),
    "grokadamw": ("grokadamw", "grokadamw"),
    "stable_adamw": ("optimi", "torch-optimi"),
    "adamw_anyprecision": ("torchdistx", "torchdistx"),
    "adamw_torch_xla": ("torch_xla", "torch_xla"),
    "adamw_torch_npu_fused": ("torch_npu", "torch-npu"),
}

# qlora loads the base model in 4-bit through bitsandbytes.
METHOD_PACKAGES = {"qlora": BITSANDBYTES}


def missing_for_run(run: str, method: str, optim: str) -> list[str]:
    """One line per package the run's method or optimizer needs and this environment lacks."""
    problems = []
    if method in METHOD_PACKAGES and not _installed(METHOD_PACKAGES[method][0]):
        problems.append(f"runs.{run}: method {method} needs {_package(METHOD_PACKAGES[method])}")
    if optim in OPTIMIZER_PACKAGES and not _installed(OPTIMIZER_PACKAGES[optim][0]):
        problems.append(f"runs.{run}: training.optim = {optim} needs {_package(OPTIMIZER_PACKAGES[optim])}")
    return problems


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _package(package: tuple[str, str]) -> str:
    module, install = package
    return f"the {module} package (pip install {install})"


# The lm_eval stage (lm_eval.tasks) runs EleutherAI's lm-evaluation-harness.
LM_EVAL = ("lm_eval", "lm-eval")


def missing_for_lm_eval(tasks: list[str]) -> list[str]:
    """A line when tasks are configured and lm-eval is not installed."""
    if tasks and not _installed(LM_EVAL[0]):
        return [f"lm_eval.tasks: the task benchmarks need {_package(LM_EVAL)}, or lm_eval.tasks: [] to skip them"]
    return []
