# The methods compared across runs: best learning rate per arm, statistics over seeds, verdicts, fairness.
# The rule reruns when the comparison's library code changes.
COMPARE_SOURCES = sorted(str(p) for p in (WORKFLOW_DIR / "scripts" / "ftcompare" / "compare").glob("*.py"))


rule compare:
    input:
        metrics=expand(rules.train.output.metrics, run=RUNS),
        sources=COMPARE_SOURCES,
    output:
        summary=report(
            f"{RESULTS}/compare/summary.json",
            caption="../report/caption_compare.rst",
            category="Comparison",
            labels={"file": "summary"},
        ),
        tables=report(
            directory(f"{RESULTS}/compare/tables"),
            patterns=["{name}.csv"],
            caption="../report/caption_compare_tables.rst",
            category="Comparison",
            labels={"table": "{name}"},
        ),
        figures=report(
            directory(f"{RESULTS}/compare/figures"),
            patterns=["{name}.png"],
            caption="../report/caption_compare_figures.rst",
            category="Comparison",
            labels={"figure": "{name}"},
        ),
    log:
        f"{RESULTS}/logs/compare.log",
    benchmark:
        f"{RESULTS}/benchmarks/compare.tsv"
    conda:
        "../envs/compare.yaml"
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        runs=RUNS,
        run_table=canonical(RUN_TABLE),
        compare=canonical(config["compare"]),
        # Each run's effective settings, for the fairness table.
        settings=canonical({run: run_settings(config, run) for run in RUNS}),
    script:
        "../scripts/compare.py"
