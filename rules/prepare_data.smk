rule prepare_data:
    input:
        base_model=rules.base_model.output.model,
    output:
        train=f"{RESULTS}/data/train.parquet",
        eval=f"{RESULTS}/data/eval.parquet",
        card=report(
            f"{RESULTS}/data/data_card.json",
            caption="../report/caption_data.rst",
            category="Data",
            labels={"file": "data card"},
        ),
    log:
        f"{RESULTS}/logs/prepare_data.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_data.tsv"
    conda:
        "../envs/train.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        data=data_params(),
        seed=config["seed"],
        max_seq_length=config["training"]["max_seq_length"],
        trust_remote_code=config["trust_remote_code"],
    script:
        "../scripts/prepare_data.py"
