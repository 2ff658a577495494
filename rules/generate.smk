rule generate:
    input:
        unpack(generate_inputs),
    output:
        generations=report(
            f"{RESULTS}/generations/{{model}}.jsonl",
            caption="../report/caption_generations.rst",
            category="Generations",
            labels={"model": "{model}"},
        ),
        telemetry=f"{RESULTS}/generations/{{model}}.telemetry.csv",
        telemetry_summary=f"{RESULTS}/generations/{{model}}.telemetry.json",
    log:
        f"{RESULTS}/logs/generate/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/generate/{{model}}.tsv"
    conda:
        "../envs/train.yaml"
    threads: GPU_JOB_THREADS
    resources:
        gpu=USES_GPU,
        mem_mb=load_mem_mb,
        runtime=60,
    params:
        generation=generation_params(),
        method=run_method,
        quantization=run_quantization,
        candidates=best_candidates,
        dtype=GENERATION_DTYPE,
        seed=config["seed"],
        device=config["device"],
        telemetry=TELEMETRY,
        trust_remote_code=config["trust_remote_code"],
    script:
        "../scripts/generate.py"
