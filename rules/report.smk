rule report:
    input:
        metrics=expand(f"{RESULTS}/runs/{{run}}/metrics.json", run=RUNS),
        log_history=expand(f"{RESULTS}/runs/{{run}}/log_history.csv", run=RUNS),
        train_telemetry=expand(f"{RESULTS}/runs/{{run}}/telemetry.json", run=RUNS),
        generations=expand(f"{RESULTS}/generations/{{model}}.jsonl", model=MODELS),
        data_card=f"{RESULTS}/data/data_card.json",
        base_model=f"{RESULTS}/models/base",
        template=str(WORKFLOW_DIR / "report" / "report.html.j2"),
        style=str(WORKFLOW_DIR / "report" / "style.css"),
        sources=REPORT_SOURCES,
    output:
        html=report(
            f"{RESULTS}/report/report.html",
            caption="../report/caption_report.rst",
            category="Report",
            labels={"file": "comparison report"},
        ),
        figures=report(
            directory(f"{RESULTS}/report/figures"),
            patterns=["{name}.png"],
            caption="../report/caption_figures.rst",
            category="Figures",
            labels={"figure": "{name}"},
        ),
        tables=report(
            directory(f"{RESULTS}/report/tables"),
            patterns=["{name}.csv"],
            caption="../report/caption_tables.rst",
            category="Tables",
            labels={"table": "{name}"},
        ),
    log:
        f"{RESULTS}/logs/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv"
    conda:
        "../envs/report.yaml"
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        runs=RUNS,
        config=canonical(config),
        config_hash=config_hash(config),
        reference=canonical(config["report"]["reference"]),
        title=config["report"]["title"],
    script:
        "../scripts/report.py"
