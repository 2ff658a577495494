"""Snakemake entry: what one run changed in its weights, against the base model's (rule `analyse_weights`)."""

# The job's GPUs first, before any import that may initialise CUDA or HIP (see scripts/train.py).
from ftcompare.script_runtime import run_script, take_job_devices

JOB_DEVICES = take_job_devices(snakemake)  # noqa: F821

import logging
import time

from ftcompare.atomic import write_json, write_text
from ftcompare.devices import resolve_device, set_cpu_threads
from ftcompare.weight_change import AnalysisSettings, analyse_run, analysis_document, changes_csv

log = logging.getLogger("ftcompare.analyse_weights")


def main(smk, job_devices):
    log.info("GPUs: %s; %d CPU threads", job_devices.assignment, smk.threads)
    set_cpu_threads(smk.threads)
    device = resolve_device(smk.params.device)
    run, method = smk.wildcards.run, smk.params.method
    settings = AnalysisSettings.from_config(smk.params.analysis)
    began = time.perf_counter()
    changes = analyse_run(
        smk.input.base_model,
        smk.input.run_model,
        method,
        settings,
        device,
        dtype=smk.params.dtype,
        quantization=smk.params.quantization or None,
        trust_remote_code=smk.params.trust_remote_code,
    )
    seconds = time.perf_counter() - began
    if not changes:
        log.warning("%s: no %s module matched weight_analysis.modules = %s", run, method, settings.modules)
    document = analysis_document(run, method, settings, changes, device, seconds)
    write_text(smk.output.table, changes_csv(changes))
    write_json(smk.output.json, document)
    summary = document["summary"]
    log.info(
        "%s: %d weight matrices in %.1f s on %s: mean relative change %.3g, median rank at %g%% of the energy "
        "%s, %d intruder dimensions",
        run,
        summary["modules"],
        seconds,
        device,
        summary["mean_relative_change"] or 0.0,
        100 * settings.energy,
        summary["median_rank90"],
        summary["total_intruders"],
    )


run_script(main, snakemake, JOB_DEVICES)  # noqa: F821
