rule report:
    input:
        metrics=expand(rules.train.output.metrics, run=RUNS),
        log_history=expand(rules.train.output.log_history, run=RUNS),
        train_telemetry=expand(rules.train.output.telemetry_summary, run=RUNS),
        generations=expand(rules.generate.output.generations, model=MODELS),
        evaluations=expand(rules.evaluate.output.json, model=EVALUATED_MODELS),
        weights=expand(rules.analyse_weights.output.json, run=RUNS) if WEIGHT_ANALYSIS else [],
        data_card=rules.prepare_data.output.card,
        base_model=rules.base_model.output.model,
        plan=rules.plan.output.json,
        compare_summary=rules.compare.output.summary,
        compare_figures=rules.compare.output.figures,
        lm_eval=LM_EVAL_RESULTS,
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
