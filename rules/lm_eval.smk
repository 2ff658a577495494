# Task benchmarks through EleutherAI's lm-evaluation-harness (docs/lm_eval.md): the base model and every
# run's model on lm_eval.tasks. With no tasks configured there are no lm_eval jobs.
rule lm_eval:
    input:
        unpack(lm_eval_inputs),
    output:
        results=report(
            f"{RESULTS}/lm_eval/{{model}}.json",
            caption="../report/caption_lm_eval.rst",
            category="Task benchmarks",
            labels={"model": "{model}"},
        ),
        telemetry=f"{RESULTS}/lm_eval/{{model}}.telemetry.csv",
        telemetry_summary=f"{RESULTS}/lm_eval/{{model}}.telemetry.json",
    log:
        f"{RESULTS}/logs/lm_eval/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/lm_eval/{{model}}.tsv"
    conda:
        "../envs/lm_eval.yaml"
    threads: GPU_JOB_THREADS
    resources:
        gpu=USES_GPU,
        mem_mb=load_mem_mb,
        runtime=240,
    params:
        lm_eval=lm_eval_params(),
        method=run_method,
        quantization=run_quantization,
        candidates=best_candidates,
        dtype=GENERATION_DTYPE,
        device=config["device"],
        telemetry=TELEMETRY,
        trust_remote_code=config["trust_remote_code"],
    script:
        "../scripts/run_lm_eval.py"


# The report's inputs: every model's task results, or nothing when no tasks are configured.
LM_EVAL_RESULTS = expand(rules.lm_eval.output.results, model=MODELS) if LM_EVAL_TASKS else []
