"""Snakemake entry: score one model on every evaluation set (rule `evaluate`, wildcard `model`)."""

# The job's GPUs first, before any import that may initialise CUDA or HIP (see scripts/train.py).
from ftcompare.script_runtime import run_script, take_job_devices

JOB_DEVICES = take_job_devices(snakemake)  # noqa: F821

import logging
import time

from ftcompare.atomic import write_json
from ftcompare.devices import resolve_device, set_cpu_threads
from ftcompare.evaluation import kept_checkpoints, score_eval_sets
from ftcompare.generation import load_generation_model
from ftcompare.telemetry import TelemetrySampler

log = logging.getLogger("ftcompare.evaluate")


def main(smk, job_devices):
    log.info("GPUs: %s; %d CPU threads", job_devices.assignment, smk.threads)
    set_cpu_threads(smk.threads)
    started = time.perf_counter()
    device = resolve_device(smk.params.device)
    model_name = smk.wildcards.model
    roles = dict(smk.params.eval_sets)  # heldout first, in the order of input.eval_sets
    sets = dict(zip(roles, smk.input.eval_sets, strict=True))
    telemetry = smk.params.telemetry
    with TelemetrySampler(
        smk.output.telemetry,
        smk.output.telemetry_summary,
        backend=telemetry["backend"],
        interval_s=telemetry["interval_s"],
        job=f"evaluate {model_name}",
        job_devices=job_devices.record(),
    ) as sampler:

        def score(run_model):
            sampler.set_phase("load")
            # As generation loads it (a LoRA adapter merged), in the dtype the runs trained in.
            model, tokenizer = load_generation_model(
                smk.input.base_model,
                run_model,
                smk.params.method,
                True,
                smk.params.dtype,
                smk.params.trust_remote_code,
                device,
                smk.params.quantization or None,
            )
            sampler.set_phase("eval")
            scores = score_eval_sets(model, tokenizer, sets, smk.params.settings, smk.params.seed, device)
            return str(model.dtype).removeprefix("torch."), {
                name: {"role": roles[name], **scores[name]} for name in roles
            }

        dtype, scored = score(smk.input.get("run_model"))
        # With checkpoints.keep, the run's kept checkpoints too: its path from the base model to where it ended.
        checkpoints = []
        for step, folder in kept_checkpoints(smk.params.checkpoints) if smk.params.checkpoints else []:
            log.info("%s: scoring its checkpoint at step %d (%s)", model_name, step, folder)
            try:
                checkpoints.append({"step": step, "sets": score(folder)[1]})
            except OSError as error:  # not a model folder (FSDP's sharded checkpoints): the run's point stays
                log.warning("%s: checkpoint %s left out, it does not load as a model: %s", model_name, folder, error)
    result = {
        "model": model_name,
        "method": smk.params.method,
        "dtype": dtype,
        "device": device,
        "settings": smk.params.settings,
        "sets": scored,
        "checkpoints": checkpoints,
        "seconds": round(time.perf_counter() - started, 3),
    }
    write_json(smk.output.json, result)
    log.info("%s: scored on %d evaluation sets, written to %s", model_name, len(roles), smk.output.json)


run_script(main, snakemake, JOB_DEVICES)  # noqa: F821
