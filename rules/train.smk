rule train:
    input:
        train=rules.prepare_data.output.train,
        eval=rules.prepare_data.output.eval,
        data_card=rules.prepare_data.output.card,
        base_model=rules.base_model.output.model,
    output:
        model=directory(f"{RESULTS}/runs/{{run}}/model"),
        tensorboard=directory(f"{RESULTS}/runs/{{run}}/tensorboard"),
        metrics=report(
            f"{RESULTS}/runs/{{run}}/metrics.json",
            caption="../report/caption_metrics.rst",
            category="Runs",
            subcategory="{run}",
            labels={"run": "{run}", "file": "metrics"},
        ),
        log_history=f"{RESULTS}/runs/{{run}}/log_history.csv",
        telemetry=f"{RESULTS}/runs/{{run}}/telemetry.csv",
        telemetry_summary=f"{RESULTS}/runs/{{run}}/telemetry.json",
    log:
        f"{RESULTS}/logs/train/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{run}}.tsv"
    # The long jobs first: the short ones left for the end then pair up on a CPU (side_by_side_threads).
    priority: 50
    conda:
        "../envs/train.yaml"
    threads: GPU_JOB_THREADS
    resources:
        gpu=run_gpus,
        mem_mb=train_mem_mb,
        disk_mb=train_disk_mb,
        runtime=720,
    params:
        settings=train_params,
        dtype=config["base_model"]["dtype"],
        device=config["device"],
        telemetry=TELEMETRY,
        trust_remote_code=config["trust_remote_code"],
        # Outside the outputs on purpose: Snakemake deletes outputs before a rerun.
        checkpoints=lambda wildcards: f"{RESULTS}/checkpoints/{wildcards.run}",
    script:
        "../scripts/train.py"
