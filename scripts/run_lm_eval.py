"""Snakemake entry: lm-evaluation-harness tasks on one model (rule `lm_eval`, wildcard `model`).

Named run_lm_eval.py, not lm_eval.py: scripts/ is on sys.path, and a module lm_eval there would hide the
lm-eval package.
"""

# The job's GPUs first, before any import that may initialise CUDA or HIP (see scripts/train.py).
from ftcompare.script_runtime import run_script, take_job_devices

JOB_DEVICES = take_job_devices(snakemake)  # noqa: F821

import logging

from ftcompare.atomic import write_json
from ftcompare.devices import resolve_device, set_cpu_threads
from ftcompare.generation import load_generation_model
from ftcompare.lm_eval_stage import LmEvalSettings, evaluate_model
from ftcompare.sweep import model_to_load
from ftcompare.telemetry import TelemetrySampler

log = logging.getLogger("ftcompare.lm_eval")


def main(smk, job_devices):
    log.info("GPUs: %s; %d CPU threads", job_devices.assignment, smk.threads)
    set_cpu_threads(smk.threads)
    device = resolve_device(smk.params.device)
    model_name = smk.wildcards.model
    settings = LmEvalSettings.from_params(smk.params.lm_eval)
    telemetry = smk.params.telemetry
    with TelemetrySampler(
        smk.output.telemetry,
        smk.output.telemetry_summary,
        backend=telemetry["backend"],
        interval_s=telemetry["interval_s"],
        job=f"lm_eval {model_name}",
        job_devices=job_devices.record(),
    ) as sampler:
        sampler.set_phase("load")
        # As generation loads it: a LoRA adapter merged into the base, a QLoRA one into its dequantized base.
        run_model, quantization, best_of = model_to_load(smk)
        model, tokenizer = load_generation_model(
            smk.input.base_model,
            run_model,
            smk.params.method,
            True,
            smk.params.dtype,
            smk.params.trust_remote_code,
            device,
            quantization,
        )
        log.info("%s: lm-eval tasks %s in %s", model_name, settings.tasks, str(model.dtype).removeprefix("torch."))
        sampler.set_phase("evaluate")
        document = evaluate_model(model, tokenizer, settings, model_name, smk.params.method)
    if best_of is not None:
        document["best_of"] = best_of
    write_json(smk.output.results, document)
    log.info("%s: task results written to %s", model_name, smk.output.results)


run_script(main, snakemake, JOB_DEVICES)  # noqa: F821
