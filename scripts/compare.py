"""Snakemake entry script of the `compare` rule: the methods compared across runs (results/compare/)."""

# First, before the libraries: it keeps the garbage collector off while they import.
from ftcompare.script_runtime import run_script  # isort: split

from ftcompare.compare.outputs import read_run_metrics, write_comparison


def main(smk) -> None:
    metrics = read_run_metrics(list(smk.params.runs), list(smk.input.metrics))
    write_comparison(
        run_table=list(smk.params.run_table),
        metrics=metrics,
        settings=dict(smk.params.settings),
        compare_config=smk.params.compare,
        summary_path=smk.output.summary,
        tables_dir=smk.output.tables,
        figures_dir=smk.output.figures,
    )


if __name__ == "__main__":
    run_script(main, snakemake)  # noqa: F821
