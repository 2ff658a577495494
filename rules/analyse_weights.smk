rule analyse_weights:
    input:
        unpack(analysis_inputs),
    output:
        table=report(
            f"{RESULTS}/analysis/{{run}}.csv",
            caption="../report/caption_analysis.rst",
            category="Weights",
            labels={"run": "{run}", "file": "weight changes"},
        ),
        json=f"{RESULTS}/analysis/{{run}}.json",
    log:
        f"{RESULTS}/logs/analyse_weights/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/analyse_weights/{{run}}.tsv"
    conda:
        "../envs/train.yaml"
    threads: side_by_side_threads
    resources:
        gpu=USES_GPU,
        mem_mb=analysis_mem_mb,
        runtime=120,
    params:
        analysis=analysis_params(),
        method=lambda wildcards: config["runs"][wildcards.run]["method"],
        quantization=analysis_quantization,
        dtype=config["base_model"]["dtype"],
        device=config["device"],
        trust_remote_code=config["trust_remote_code"],
    script:
        "../scripts/analyse_weights.py"
