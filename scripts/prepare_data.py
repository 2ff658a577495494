"""Snakemake entry for rule prepare_data: load, check and split the instruction data; write the data card.

Token lengths in the card are counted with the base model's tokenizer (smk.input.base_model).
"""

# First, before the libraries: it keeps the garbage collector off while they import.
from ftcompare.script_runtime import run_script  # isort: split

import logging

from ftcompare.data import DataSpec, prepare_data
from ftcompare.errors import FtcompareError

log = logging.getLogger("ftcompare.data")


def main(smk):
    from transformers import AutoTokenizer

    spec = DataSpec.from_section(smk.params.data, seed=smk.params.seed, max_seq_length=smk.params.max_seq_length)
    log.info(
        "data: %s (revision %s, split %s, column %s); tokenizer from %s",
        spec.name,
        spec.revision,
        spec.split,
        spec.text_column,
        smk.input.base_model,
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(smk.input.base_model, trust_remote_code=smk.params.trust_remote_code)
    except (OSError, ValueError) as error:
        reason = next(iter(str(error).strip().splitlines()), "")
        raise FtcompareError(
            f"could not load the tokenizer from the base model folder {smk.input.base_model}: "
            f"{type(error).__name__}: {reason}"
        ) from None
    card = prepare_data(spec, tokenizer, smk.output.train, smk.output.eval, smk.output.card)
    rows = card["rows"]
    log.info("source %s, revision %s, fingerprint %s", card["source"], card["revision"], card["fingerprint"])
    log.info(
        "rows: %d loaded, %d empty dropped, %d over data.max_rows dropped, %d train, %d eval",
        rows["loaded"],
        rows["dropped_empty"],
        rows["dropped_over_max_rows"],
        rows["train"],
        rows["eval"],
    )
    for split, stats in card["token_length"].items():
        log.info(
            "%s tokens per row: min %d, median %s, p95 %s, max %d; %d rows over max_seq_length %d",
            split,
            stats["min"],
            stats["median"],
            stats["p95"],
            stats["max"],
            card["truncated_rows"][split],
            card["max_seq_length"],
        )
    log.info("wrote %s, %s, %s", smk.output.train, smk.output.eval, smk.output.card)


run_script(main, snakemake)  # noqa: F821
