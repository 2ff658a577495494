"""Snakemake entry script of the base_model rule: write the base model folder (smk.output.model).

params: base_model (the config's base_model section), seed, trust_remote_code.
"""

# First, before the libraries: it keeps the garbage collector off while they import.
from ftcompare.script_runtime import log, run_script  # isort: split

from ftcompare.base_model import EMBEDDED, materialize_base_model
from ftcompare.embedded_model import EmbeddedModelSpec


def main(smk):
    # The validated config's section; the rule passes `embedded` only when the name is `embedded`.
    section = smk.params.base_model
    embedded_spec = None
    if section["name"] == EMBEDDED:
        embedded_spec = EmbeddedModelSpec.from_config({"seed": smk.params.seed, "base_model": section})
    materialize_base_model(
        name=section["name"],
        revision=section["revision"],
        dtype=section["dtype"],
        trust_remote_code=bool(smk.params.trust_remote_code),
        out_dir=smk.output.model,
        embedded_spec=embedded_spec,
        log=log.info,
    )


run_script(main, snakemake)  # noqa: F821
