"""Build the report: figures (PDF, SVG, PNG), tables (CSV, LaTeX) and the HTML page that holds
them all. Each output appears complete or not at all."""

import datetime
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ftcompare.atomic import atomic_path
from ftcompare.learning import learning_by_run
from ftcompare.report import costs
from ftcompare.report.comparison import comparison_section, folds_per_run_detail
from ftcompare.report.figure_style import FigureFiles, save_figure
from ftcompare.report.figures import report_figures
from ftcompare.report.headline import base_eval_loss, headline_table
from ftcompare.report.inputs import ReportInputs
from ftcompare.report.latex import table_to_latex
from ftcompare.report.learning import learning_forgetting_figure, learning_table
from ftcompare.report.lm_eval import limit_note, lm_eval_table
from ftcompare.report.memory_plan import memory_plan_table
from ftcompare.report.outputs import generation_summary_table, prompt_comparisons
from ftcompare.report.provenance import collect_provenance
from ftcompare.report.reference import reference_table
from ftcompare.report.render import HtmlFigure, html_table, inline_style, load_template, png_data_uri, render_html
from ftcompare.report.table import table_to_csv, transpose
from ftcompare.report.verdict import run_verdict
from ftcompare.report.weights import weight_figures, weight_summary_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportOutputs:
    html: Path
    figures: dict[str, FigureFiles]
    tables: list[Path]


def build_report(
    inputs: ReportInputs,
    out_html,
    figures_dir,
    tables_dir,
    command_line: str | None = None,
    now: datetime.datetime | None = None,
) -> ReportOutputs:
    out_html, figures_dir, tables_dir = Path(out_html), Path(figures_dir), Path(tables_dir)
    template, style = load_template(inputs.template), inline_style(inputs.style)
    runs = inputs.runs
    learning = learning_by_run(inputs.evaluations)
    headline = headline_table(runs, learning)
    full = costs.full_fine_tune(runs)
    reference = reference_table(runs, inputs.reference)
    memory_plan = memory_plan_table(runs, inputs.plan)
    generation_summary = generation_summary_table(inputs.generations)
    figure_specs, missing_figures = report_figures(runs, base_eval_loss(runs))
    comparison = (
        comparison_section(inputs.comparison, inputs.comparison_figures, out_html.parent)
        if inputs.comparison is not None
        else None
    )
    learning_per_set = learning_table(inputs.evaluations, learning) if inputs.evaluations else None
    if inputs.evaluations:
        learning_figure, why_not = learning_forgetting_figure(learning)
        if learning_figure is not None:
            figure_specs.append(learning_figure)
        else:
            missing_figures.append(why_not)
    weight_specs, missing_weight_figures = weight_figures(inputs.weights, [run.name for run in runs])
    weight_summary = weight_summary_table(inputs.weights) if inputs.weights else None

    with (
        atomic_path(figures_dir, is_dir=True) as figures_tmp,
        atomic_path(tables_dir, is_dir=True) as tables_tmp,
        atomic_path(out_html) as html_tmp,
    ):
        figures, weight_figure_list, saved = [], [], {}
        placed = [(spec, figures) for spec in figure_specs] + [(spec, weight_figure_list) for spec in weight_specs]
        for spec, section in placed:
            files = save_figure(spec.figure, figures_tmp, spec.name)
            names = [Path(path).name for path in (files.pdf, files.svg, files.png)]
            saved[spec.name] = FigureFiles(*(figures_dir / name for name in names))
            section.append(
                HtmlFigure(
                    spec.name,
                    spec.title,
                    spec.caption,
                    png_data_uri(files.png),
                    [f"{figures_dir.name}/{name}" for name in names],
                )
            )

        table_files = {
            "headline.csv": table_to_csv(headline),
            "headline.tex": table_to_latex(headline, f"{inputs.title}: headline comparison", "tab:ftcompare-headline"),
            "headline_transposed.tex": table_to_latex(
                transpose(headline, "model"),
                f"{inputs.title}: headline comparison",
                "tab:ftcompare-headline-transposed",
            ),
            "generation.csv": table_to_csv(generation_summary),
            "memory_plan.csv": table_to_csv(memory_plan),
            "memory_plan.tex": table_to_latex(
                memory_plan, f"{inputs.title}: planned memory beside the measured peaks", "tab:ftcompare-memory-plan"
            ),
        }
        if reference is not None:
            table_files["reference.csv"] = table_to_csv(reference)
            table_files["reference.tex"] = table_to_latex(
                reference, f"{inputs.title}: published figures beside this study", "tab:ftcompare-reference"
            )
        if learning_per_set is not None:
            table_files["learning_forgetting.csv"] = table_to_csv(learning_per_set)
            table_files["learning_forgetting.tex"] = table_to_latex(
                learning_per_set,
                f"{inputs.title}: loss on each evaluation set, learning and forgetting",
                "tab:ftcompare-learning-forgetting",
            )
        if weight_summary is not None:
            table_files["weights.csv"] = table_to_csv(weight_summary)
            table_files["weights.tex"] = table_to_latex(
                weight_summary, f"{inputs.title}: what each run changed in the weights", "tab:ftcompare-weights"
            )
        task_benchmarks = lm_eval_table(inputs.lm_eval) if inputs.lm_eval else None
        if task_benchmarks is not None:
            table_files["lm_eval.csv"] = table_to_csv(task_benchmarks)
            table_files["lm_eval.tex"] = table_to_latex(
                task_benchmarks, f"{inputs.title}: task benchmarks (lm-evaluation-harness)", "tab:ftcompare-lm-eval"
            )
        for name, text in table_files.items():
            (tables_tmp / name).write_text(text, encoding="utf-8")

        context = {
            "title": inputs.title,
            "style": style,
            "runs": runs,
            "full_run": full.name if full else None,
            "headline": html_table(headline),
            "verdicts": [run_verdict(run, full) for run in runs],
            "memory_energy": html_table(costs.memory_energy_table(runs)),
            "memory_plan": html_table(memory_plan),
            "reference": html_table(reference) if reference is not None else None,
            "figures": figures,
            "learning": html_table(learning_per_set) if learning_per_set is not None else None,
            "missing_figures": missing_figures,
            "weights": {
                "summary": html_table(weight_summary),
                "figures": weight_figure_list,
                "missing_figures": missing_weight_figures,
            }
            if weight_summary is not None
            else None,
            "generation_summary": html_table(generation_summary),
            "lm_eval": html_table(task_benchmarks) if task_benchmarks is not None else None,
            "lm_eval_limit_note": limit_note(inputs.lm_eval),
            "prompts": prompt_comparisons(inputs.generations),
            "provenance": collect_provenance(inputs, command_line, now=now),
            "tables_dir": tables_dir.name,
            "table_files": sorted(table_files),
            "comparison": comparison,
            "fold_per_run": folds_per_run_detail(len(runs)),
        }
        html_tmp.write_text(render_html(template, context), encoding="utf-8")
        _readable_by_all(figures_tmp, tables_tmp, html_tmp)
    log.info(
        "report for %d runs: %s; %d figures in %s; tables %s in %s",
        len(runs),
        out_html,
        len(saved),
        figures_dir,
        ", ".join(sorted(table_files)),
        tables_dir,
    )
    return ReportOutputs(out_html, saved, [tables_dir / name for name in sorted(table_files)])


def _readable_by_all(*paths: Path) -> None:
    """Temporary files are created private (0600/0700); outputs get the usual umask modes."""
    umask = os.umask(0)
    os.umask(umask)
    for path in paths:
        for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
            os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~umask)
