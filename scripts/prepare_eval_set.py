"""Snakemake entry: one evaluation set's rows and card (rule `prepare_eval_set`, wildcard `eval_set`)."""

# First, before the libraries: it keeps the garbage collector off while they import.
from ftcompare.script_runtime import run_script  # isort: split

import logging

from ftcompare.eval_sets import EvalSetSpec, prepare_eval_set

log = logging.getLogger("ftcompare.prepare_eval_set")


def main(smk):
    spec = EvalSetSpec.from_config(smk.wildcards.eval_set, smk.params.eval_set)
    card = prepare_eval_set(spec, smk.output.parquet, smk.output.card)
    log.info("%s (%s): %d rows from %s", spec.name, spec.role, card["rows"]["kept"], card["source"])


run_script(main, snakemake)  # noqa: F821
