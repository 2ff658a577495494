"""Snakemake entry script of the `report` rule: the HTML report, its figures and its tables."""

# First, before the libraries: it keeps the garbage collector off while they import.
from ftcompare.script_runtime import run_script  # isort: split

from pathlib import Path

from ftcompare.report.build import build_report
from ftcompare.report.inputs import ReportInputPaths, load_report_inputs
from ftcompare.report.provenance import snakemake_command_line


def main(smk) -> None:
    paths = ReportInputPaths(
        metrics=list(smk.input.metrics),
        log_history=list(smk.input.log_history),
        train_telemetry=list(smk.input.train_telemetry),
        generations=list(smk.input.generations),
        data_card=smk.input.data_card,
        base_card=Path(smk.input.base_model) / "ftcompare_model.json",
        plan=smk.input.plan,
        template=smk.input.template,
        style=smk.input.style,
        compare_summary=getattr(smk.input, "compare_summary", None),
        compare_figures=getattr(smk.input, "compare_figures", None),
        evaluations=list(getattr(smk.input, "evaluations", [])),
        weights=list(smk.input.weights),
        lm_eval=list(getattr(smk.input, "lm_eval", None) or []),
    )
    inputs = load_report_inputs(
        paths,
        runs=list(smk.params.runs),
        config=smk.params.config,
        config_hash=smk.params.config_hash,
        reference=smk.params.reference,
        title=smk.params.title,
    )
    build_report(inputs, smk.output.html, smk.output.figures, smk.output.tables, command_line=snakemake_command_line())


run_script(main, snakemake)  # noqa: F821
