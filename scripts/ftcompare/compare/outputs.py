"""Everything the compare rule writes: summary.json, the tables folder and the figures folder, each
atomically (a reader never sees half of one)."""

import logging
from pathlib import Path

from ftcompare.atomic import atomic_path, write_json
from ftcompare.compare.figures import write_figures
from ftcompare.compare.summary import build_summary
from ftcompare.compare.tables import write_tables
from ftcompare.errors import FtcompareError
from ftcompare.metrics import RunMetrics, read_metrics

log = logging.getLogger("ftcompare.compare")


def read_run_metrics(runs: list[str], paths: list) -> dict[str, RunMetrics]:
    """Each run's metrics.json, `paths` in the order of `runs`."""
    if len(runs) != len(paths):
        raise FtcompareError(f"compare: {len(paths)} metrics files for {len(runs)} runs")
    return {run: read_metrics(Path(path), run) for run, path in zip(runs, paths, strict=True)}


def write_comparison(
    run_table: list[dict],
    metrics: dict[str, RunMetrics],
    settings: dict[str, dict],
    compare_config: dict,
    summary_path,
    tables_dir,
    figures_dir,
) -> dict:
    """Build the summary of these runs and write it with its tables and figures; returns the summary."""
    summary = build_summary(
        run_table,
        metrics,
        settings,
        confidence=compare_config["confidence"],
        reference_method=compare_config["reference_method"],
    )
    with atomic_path(tables_dir, is_dir=True) as tmp:
        write_tables(summary, tmp)
    with atomic_path(figures_dir, is_dir=True) as tmp:
        write_figures(summary, tmp)
    write_json(summary_path, summary)
    for comparison in summary["comparisons"]:
        if comparison["metric"] == "eval_loss":
            log.info("%s", comparison["verdict"])
    for note in summary["notes"]:
        log.info("note: %s", note)
    return summary
