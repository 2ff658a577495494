"""Snakemake entry: the memory and disk plan of every run (rule `plan`), from the config alone."""

# First, before the libraries: it keeps the garbage collector off while they import.
from ftcompare.script_runtime import run_script  # isort: split

import logging
from pathlib import Path

from ftcompare.atomic import write_json, write_text
from ftcompare.plan import summary_lines, to_csv
from ftcompare.plan_resources import PLAN_CACHE_DIR, job_plan_document

log = logging.getLogger("ftcompare.plan")


def main(smk):
    document = job_plan_document(smk.params.inputs, PLAN_CACHE_DIR, search_dirs=[Path.cwd()])
    write_json(smk.output.json, document)
    write_text(smk.output.csv, to_csv(document))
    for line in summary_lines(document):
        log.info("%s", line)


run_script(main, snakemake)  # noqa: F821
