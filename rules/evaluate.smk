rule prepare_eval_set:
    output:
        parquet=f"{RESULTS}/data/eval_sets/{{eval_set}}.parquet",
        card=report(
            f"{RESULTS}/data/eval_sets/{{eval_set}}.json",
            caption="../report/caption_evaluate_set.rst",
            category="Data",
            labels={"file": "evaluation set card", "set": "{eval_set}"},
        ),
    log:
        f"{RESULTS}/logs/prepare_eval_set/{{eval_set}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_eval_set/{{eval_set}}.tsv"
    conda:
        "../envs/train.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        eval_set=lambda wildcards: canonical(config["eval_sets"][wildcards.eval_set]),
    script:
        "../scripts/prepare_eval_set.py"


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        json=report(
            f"{RESULTS}/evaluate/{{model}}.json",
            caption="../report/caption_evaluate.rst",
            category="Evaluation",
            labels={"model": "{model}"},
        ),
        telemetry=f"{RESULTS}/evaluate/{{model}}.telemetry.csv",
        telemetry_summary=f"{RESULTS}/evaluate/{{model}}.telemetry.json",
    log:
        f"{RESULTS}/logs/evaluate/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{model}}.tsv"
    # Every run is scored, sweep points too (a model that generates is one of the base and the runs, or a best-*).
    wildcard_constraints:
        model="|".join(map(re.escape, EVALUATED_MODELS)),
    # Before the weight analyses, which nothing waits for: compare then runs beside the last of them.
    priority: 10
    conda:
        "../envs/train.yaml"
    threads: side_by_side_threads
    resources:
        gpu=USES_GPU,
        mem_mb=load_mem_mb,
        runtime=60,
    params:
        eval_sets=EVAL_SET_ROLES,
        settings=canonical(eval_settings(config["training"])),
        method=run_method,
        quantization=run_quantization,
        dtype=config["base_model"]["dtype"],
        seed=config["seed"],
        device=config["device"],
        telemetry=TELEMETRY,
        trust_remote_code=config["trust_remote_code"],
        # A run's kept checkpoints (checkpoints.keep) are scored too; outside the outputs, like train's.
        checkpoints=evaluated_checkpoints,
    script:
        "../scripts/evaluate.py"
