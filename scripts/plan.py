"""Snakemake entry: the memory and disk plan of every run (rule `plan`), from the config alone."""

import logging
from pathlib import Path

from ftcompare.atomic import write_json, write_text
from ftcompare.plan import plan_document, summary_lines, to_csv
from ftcompare.script_runtime import run_script

log = logging.getLogger("ftcompare.plan")


def main(smk):
    # The hub is asked for a model's config.json only where no local copy exists, and never offline.
    document = plan_document(smk.params.inputs, search_dirs=[Path.cwd()], allow_download=True)
    write_json(smk.output.json, document)
    write_text(smk.output.csv, to_csv(document))
    for line in summary_lines(document):
        log.info("%s", line)


run_script(main, snakemake)  # noqa: F821
