rule plan:
    input:
        sources=PLAN_SOURCES,
    output:
        json=report(
            f"{RESULTS}/plan/plan.json",
            caption="../report/caption_plan.rst",
            category="Plan",
            labels={"file": "plan"},
        ),
        csv=report(
            f"{RESULTS}/plan/plan.csv",
            caption="../report/caption_plan.rst",
            category="Plan",
            labels={"file": "plan table"},
        ),
    log:
        f"{RESULTS}/logs/plan.log",
    benchmark:
        f"{RESULTS}/benchmarks/plan.tsv"
    # First among the jobs ready at the start: it takes seconds and says what the rest will need.
    priority: 100
    conda:
        "../envs/train.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        inputs=PLAN_INPUTS,
    script:
        "../scripts/plan.py"
