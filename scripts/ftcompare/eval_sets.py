"""The evaluation sets of `eval_sets:` (learning and forgetting): each one's rows, loaded once and written as
Parquet with a small card, so that every model is scored on exactly the same text.

A set's source is `embedded` (the documentation the embedded base model's pretraining leaves out:
ftcompare.pretraining_text.held_out_pretraining_texts), or a local file or folder or a hub id, read by the
same code as the training data (ftcompare.data).
"""

from dataclasses import dataclass
from pathlib import Path

from ftcompare.atomic import atomic_path, write_json
from ftcompare.config import HELDOUT_SET
from ftcompare.data import EMBEDDED, DataError, DataSpec, drop_empty_rows, fingerprint, load_texts, write_texts_parquet
from ftcompare.embedded_data import python_version
from ftcompare.pretraining_text import HELD_OUT_MODULES, held_out_pretraining_texts

ROLES = ("target", "source")
# The keys of `training` that decide a held-out loss (ftcompare.evaluation): what the evaluate rule takes as params.
EVAL_TRAINING_KEYS = (
    "max_seq_length",
    "per_device_eval_batch_size",
    "bf16",
    "fp16",
    "lm_head_loss",
    "drop_padding_mask",
)


@dataclass(frozen=True)
class EvalSetSpec:
    """One entry of the validated `eval_sets` section (every default filled in), and its name."""

    name: str
    source: str
    role: str
    split: str
    revision: str | None
    subset: str | None
    text_column: str
    max_rows: int

    @classmethod
    def from_config(cls, name: str, section: dict) -> "EvalSetSpec":
        return cls(name=name, **{key: section[key] for key in EVAL_SET_KEYS})

    @property
    def key(self) -> str:
        return f"eval_sets.{self.name}"


EVAL_SET_KEYS = ("source", "role", "split", "revision", "subset", "text_column", "max_rows")


def eval_settings(training: dict) -> dict:
    """What of a `training` section the evaluation reads."""
    return {key: training[key] for key in EVAL_TRAINING_KEYS}


def eval_set_roles(eval_sets: dict) -> list[list[str]]:
    """[[name, role], ...] of every set a model is scored on: `heldout` (the data's own held-out split) first,
    then the config's sets by name, so that reordering the config reruns nothing."""
    return [[HELDOUT_SET, "target"]] + [[name, eval_sets[name]["role"]] for name in sorted(eval_sets)]


def load_eval_set(spec: EvalSetSpec) -> tuple[list[str], dict]:
    """The set's rows (non-empty, the first max_rows) and what the card says about where they came from."""
    if spec.source == EMBEDDED:
        texts = held_out_pretraining_texts()
        origin = {
            "source": EMBEDDED,
            "python_version": python_version(),
            "modules": list(HELD_OUT_MODULES),
            "description": "module and class docstrings of standard-library modules the embedded base model's "
            "pretraining leaves out, one paragraph per row",
        }
        dropped = 0
    else:
        data_spec = DataSpec(
            name=spec.source,
            revision=spec.revision,
            split=spec.split,
            text_column=spec.text_column,
            eval_fraction=0.0,  # nothing is split off an evaluation set
            max_rows=spec.max_rows,
            embedded_rows=None,
            seed=0,
            max_seq_length=0,
            key=spec.key,
            subset=spec.subset,
        )
        try:
            loaded = load_texts(data_spec)
        except DataError as error:
            raise DataError(str(error).replace(f"{spec.key}.name =", f"{spec.key}.source =")) from None
        texts, dropped = drop_empty_rows(loaded.texts)
        origin = {
            "source": loaded.source,
            "name": spec.source,
            "revision": loaded.revision,
            "subset": spec.subset,
            "split": spec.split if loaded.source in ("local_folder", "hub") else None,
            "text_column": spec.text_column,
        }
    if not texts:
        raise DataError(f"{spec.key}.source = {spec.source!r}: it has no row with text")
    available = len(texts)
    texts = texts[: spec.max_rows]
    card = {
        "eval_set": spec.name,
        "role": spec.role,
        **origin,
        "max_rows": spec.max_rows,
        "rows": {"non_empty": available, "dropped_empty": dropped, "kept": len(texts)},
        "characters": sum(map(len, texts)),
        "fingerprint": fingerprint(texts),
    }
    return texts, card


def prepare_eval_set(spec: EvalSetSpec, parquet_path, card_path) -> dict:
    """Write the set's rows (one column, `text`) and its card; on any error neither is left behind."""
    outputs = [Path(parquet_path), Path(card_path)]
    try:
        texts, card = load_eval_set(spec)
        with atomic_path(outputs[0]) as tmp:
            write_texts_parquet(tmp, texts)
        write_json(outputs[1], card)
    except BaseException:
        for path in outputs:
            path.unlink(missing_ok=True)
        raise
    return card
