"""Snakemake entry: the fixed prompts through one model (rule `generate`, wildcard `model`).

A `best-<method>` model is the candidate run (a sweep point) with the lowest held-out loss: each of its
records says which under `best_of` (docs/sweeps.md)."""

# The job's GPUs first, before any import that may initialise CUDA or HIP (see scripts/train.py).
from ftcompare.script_runtime import run_script, take_job_devices

JOB_DEVICES = take_job_devices(snakemake)  # noqa: F821

import logging

from ftcompare import strict_json
from ftcompare.atomic import atomic_path
from ftcompare.devices import resolve_device, set_cpu_threads
from ftcompare.generation import generate_outputs, load_generation_model
from ftcompare.prompts import load_prompts
from ftcompare.sweep import model_to_load
from ftcompare.telemetry import TelemetrySampler

log = logging.getLogger("ftcompare.generate")


def main(smk, job_devices):
    log.info("GPUs: %s; %d CPU threads", job_devices.assignment, smk.threads)
    set_cpu_threads(smk.threads)
    device = resolve_device(smk.params.device)
    model_name = smk.wildcards.model
    settings = smk.params.generation
    prompts = load_prompts(smk.input.prompts)
    telemetry = smk.params.telemetry
    run_model, quantization, best_of = model_to_load(smk)
    with TelemetrySampler(
        smk.output.telemetry,
        smk.output.telemetry_summary,
        backend=telemetry["backend"],
        interval_s=telemetry["interval_s"],
        job=f"generate {model_name}",
        job_devices=job_devices.record(),
    ) as sampler:
        sampler.set_phase("load")
        model, tokenizer = load_generation_model(
            smk.input.base_model,
            run_model,
            smk.params.method,
            settings["merge_lora"],
            smk.params.dtype,
            smk.params.trust_remote_code,
            device,
            quantization,
        )
        log.info("%s: generating in %s", model_name, str(model.dtype).removeprefix("torch."))
        sampler.set_phase("generate")
        records = generate_outputs(model, tokenizer, prompts, settings, smk.params.seed, model_name)
    if best_of is not None:
        records = [{**record, "best_of": best_of} for record in records]
    with atomic_path(smk.output.generations) as tmp:
        tmp.write_text("".join(strict_json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    log.info("%s: %d generations written to %s", model_name, len(records), smk.output.generations)


run_script(main, snakemake, JOB_DEVICES)  # noqa: F821
