"""Snakemake entry: fine-tune one run (rule `train`, wildcard `run`)."""

# The job's GPUs come first: CUDA and HIP read CUDA_/HIP_VISIBLE_DEVICES once, when something first
# touches the GPU, and importing the training libraries can do that (peft imports bitsandbytes, which does).
from ftcompare.script_runtime import run_script, take_job_devices

JOB_DEVICES = take_job_devices(snakemake)  # noqa: F821

import csv
import dataclasses
import hashlib
import json
import logging
from importlib import metadata
from pathlib import Path

from ftcompare.atomic import atomic_path
from ftcompare.checkpoints import mark_finished
from ftcompare.devices import device_name, resolve_device, set_cpu_threads, torch_version_and_build
from ftcompare.embedded_model import CARD_NAME
from ftcompare.launch import train_in_processes
from ftcompare.metrics import LOG_HISTORY_COLUMNS, MemoryFigure, write_metrics
from ftcompare.parallel import check_devices, processes
from ftcompare.plan import plan_document, plan_inputs
from ftcompare.plan_check import available_memory, check_plan
from ftcompare.telemetry import TelemetrySampler, memory_figures, peak_of
from ftcompare.training import RunPaths, train_run

log = logging.getLogger("ftcompare.train")
TRAINING_PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers")


def main(smk, job_devices):
    settings = smk.params.settings
    log.info("GPUs: %s; %d CPU threads", job_devices.assignment, smk.threads)
    set_cpu_threads(smk.threads)
    device = resolve_device(smk.params.device)
    check_devices(settings["run"], settings["training"], device)
    several_processes = processes(settings["training"]) > 1
    paths = RunPaths(
        train_data=Path(smk.input.train),
        eval_data=Path(smk.input.eval),
        base_model=Path(smk.input.base_model),
        model_out=Path(smk.output.model),
        tensorboard=Path(smk.output.tensorboard),
        checkpoints=Path(smk.params.checkpoints),
    )
    # The run's memory plan, as results/plan/plan.json has it, made here from the same config: the plan
    # rule's output is no input of this rule, so a plan remade for another run's change retrains nothing.
    plan = plan_document(plan_inputs(smk.config, runs=[settings["run"]]), search_dirs=[Path.cwd()])
    fingerprint = {
        "settings": settings,
        "dtype": smk.params.dtype,
        "data": json.loads(Path(smk.input.data_card).read_text(encoding="utf-8"))["fingerprint"],
        "base_model": hashlib.sha256((paths.base_model / CARD_NAME).read_bytes()).hexdigest(),
    }
    telemetry = smk.params.telemetry
    with TelemetrySampler(
        smk.output.telemetry,
        smk.output.telemetry_summary,
        backend=telemetry["backend"],
        interval_s=telemetry["interval_s"],
        job=f"train {settings['run']}",
        job_devices=job_devices.record(),
    ) as sampler:
        args = (settings, paths, device, smk.params.dtype, smk.params.trust_remote_code, fingerprint, sampler)
        if several_processes:
            log.info("%s", check_plan(plan, settings, available_memory(device, plan)))
            metrics, rows = train_in_processes(*args, threads=smk.threads)
        else:
            metrics, rows = train_run(*args, plan=plan)
    summary = sampler.summary
    figures = memory_figures(summary)
    if several_processes:
        # This process's torch counters saw none of the ranks' tensors; the ranks reported their own.
        figures = {name: f for name, f in figures.items() if not name.startswith("torch_")}
        figures.update({name: vars(figure) for name, figure in metrics.memory.items()})
    peak_mb, peak_source = peak_of(figures, summary)
    metrics = dataclasses.replace(
        metrics,
        device_name=device_name(device),
        devices=list(job_devices.devices),
        device_assignment=job_devices.assignment,
        peak_memory_mb=peak_mb,
        peak_memory_source=peak_source,
        memory={name: MemoryFigure(**figure) for name, figure in figures.items()},
        energy_j=summary.get("energy_j"),
        energy_source=summary.get("energy_method") if summary.get("energy_j") is not None else None,
        telemetry_backend=summary.get("backend"),
        torch_build=torch_version_and_build(),
        versions={name: metadata.version(name) for name in TRAINING_PACKAGES},
    )
    with atomic_path(smk.output.log_history) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=LOG_HISTORY_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    write_metrics(smk.output.metrics, metrics)
    # Read from the config, not a rule param: keeping checkpoints changes no output, so it must not retrain.
    mark_finished(paths.checkpoints, keep_checkpoints=smk.config["checkpoints"]["keep"])
    log.info(
        "run %s: final loss %.4f, eval loss %.4f (before training %.4f), %.1f s",
        metrics.run,
        metrics.final_train_loss,
        metrics.eval_loss,
        metrics.eval_loss_before_training,
        metrics.train_runtime_s,
    )


run_script(main, snakemake, JOB_DEVICES)  # noqa: F821
