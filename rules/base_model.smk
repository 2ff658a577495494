rule base_model:
    output:
        model=directory(f"{RESULTS}/models/base"),
    log:
        f"{RESULTS}/logs/base_model.log",
    benchmark:
        f"{RESULTS}/benchmarks/base_model.tsv"
    conda:
        "../envs/train.yaml"
    threads: JOB_THREADS
    resources:
        mem_mb=load_mem_mb,
        disk_mb=base_model_disk_mb,
        runtime=120,
    params:
        base_model=base_model_params(),
        seed=config["seed"],
        trust_remote_code=config["trust_remote_code"],
    script:
        "../scripts/base_model.py"
