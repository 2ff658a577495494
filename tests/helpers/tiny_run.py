"""What train_run needs, tiny: a base model folder, train/eval Parquet files, run settings and paths.

Each test module makes its own folder once, in a module-scoped fixture:

    @pytest.fixture(scope="module")
    def tiny_run(tmp_path_factory):
        return make_tiny_run(tmp_path_factory.mktemp("tiny-run"))
"""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from conftest import REPO
from ftcompare.config import run_settings, validate_config
from ftcompare.training import RunPaths
from helpers.tiny_llama import tiny_llama, word_tokenizer


def make_tiny_run(root: Path) -> Path:
    """A tiny Llama and word-level tokenizer saved like a base model in `root`/base, and train/eval Parquet files."""
    tokenizer = word_tokenizer()
    model = tiny_llama(hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    model.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    texts = [" ".join(f"w{(i * 7 + j) % 40}" for j in range(3 + i % 9)) for i in range(24)]
    for name, rows in (("train", texts[:20]), ("eval", texts[20:])):
        pq.write_table(pa.table({"text": rows}), root / f"{name}.parquet")
    return root


def settings_for(method="lora", **training):
    """The settings of a run of `method`: 4 steps of 2 rows, logging each; `training` overrides."""
    config = validate_config(
        {
            "seed": 5,
            "training": {
                "max_steps": 4,
                "per_device_train_batch_size": 2,
                "logging_steps": 1,
                "save_steps": 10,
                "max_seq_length": 16,
                "report_to": [],
                **training,
            },
        },
        search_dirs=[REPO],
    )
    return run_settings(config, method)


def run_paths(root: Path, out: Path) -> RunPaths:
    """The inputs in `root` (made by make_tiny_run), the outputs under `out`."""
    return RunPaths(
        train_data=root / "train.parquet",
        eval_data=root / "eval.parquet",
        base_model=root / "base",
        model_out=out / "model",
        tensorboard=out / "tensorboard",
        checkpoints=out / "checkpoints",
    )
