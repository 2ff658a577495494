rule base_model:
    output:
        model=directory(f"{RESULTS}/models/base"),
    params:
        base_model=base_model_params(),
        seed=config["seed"],
        trust_remote_code=config["trust_remote_code"],
    log:
        f"{RESULTS}/logs/base_model.log",
    benchmark:
        f"{RESULTS}/benchmarks/base_model.tsv"
    threads: JOB_THREADS
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/base_model.py"
