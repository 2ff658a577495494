"""A checkpoint folder as the Trainer leaves it, complete or cut off while saving."""

import json
from pathlib import Path

STATES = ("complete", "truncated", "missing")


def make_checkpoint(folder: Path, step: int, state: str = "complete") -> Path:
    """`folder`/checkpoint-`step` with weights and a trainer_state.json that is `state`:
    complete, truncated (cut off mid-write) or missing (the save stopped before it)."""
    assert state in STATES, state
    path = Path(folder) / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    if state == "complete":
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    elif state == "truncated":
        (path / "trainer_state.json").write_text('{"glob')
    return path
