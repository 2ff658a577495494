"""Which training checkpoint a rerun may resume from.

Checkpoints live outside the rule's declared outputs (Snakemake deletes those before a rerun).
A fingerprint of what the run depends on (settings, data, base model) sits beside them; a
checkpoint made for another fingerprint is never resumed from. Once the job has written all its
outputs the folder is marked finished, so a forced rerun trains again instead of resuming at the
last step.
"""

import json
import logging
import re
import shutil
from pathlib import Path

from ftcompare.atomic import write_json

log = logging.getLogger("ftcompare.checkpoints")

FINGERPRINT_FILE = "ftcompare_fingerprint.json"
FINISHED_FILE = "ftcompare_finished.json"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
# What the Trainer writes last when it saves; a checkpoint without it was cut off mid-save.
_COMPLETE_MARKERS = ("trainer_state.json",)
# FSDP's sharded weights: one folder per model, whose .metadata torch.distributed.checkpoint writes last.
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "pytorch_model_fsdp_*/.metadata")
_CHANGES_NAMED = 6


def checkpoint_step(path: Path) -> int | None:
    match = _CHECKPOINT_NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


def is_complete(checkpoint: Path) -> bool:
    if not all((checkpoint / marker).is_file() for marker in _COMPLETE_MARKERS):
        return False
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any(any(checkpoint.glob(pattern)) for pattern in _WEIGHT_PATTERNS)


def prepare_checkpoint_dir(checkpoint_dir, fingerprint: dict) -> Path | None:
    """Return the newest complete checkpoint made for `fingerprint`, or None to start from step 0.

    A folder made for another fingerprint, or by a run that finished, is emptied, with the reason
    logged. Incomplete checkpoints are removed, so that training does not save into them later.
    """
    checkpoint_dir = Path(checkpoint_dir)
    stored_path = checkpoint_dir / FINGERPRINT_FILE
    if checkpoint_dir.exists():
        reason = _reason_to_start_over(checkpoint_dir, fingerprint)
        if reason:
            if any(checkpoint_dir.glob("checkpoint-*")):
                log.warning(
                    "not resuming from the checkpoints in %s: %s; training starts over from step 0",
                    checkpoint_dir,
                    reason,
                )
            shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    write_json(stored_path, fingerprint)

    for candidate in checkpoints_in(checkpoint_dir):
        if is_complete(candidate):
            return candidate
        log.warning("skipping %s: incomplete (cut off while saving?); removing it", candidate)
        shutil.rmtree(candidate)
    return None


def mark_finished(checkpoint_dir, keep_checkpoints: bool) -> None:
    """Record that the run these checkpoints belong to wrote all its outputs; unless `keep_checkpoints`,
    remove its checkpoints (weights and optimizer states: about 81 GB each for a 7B full fine-tune)."""
    checkpoint_dir = Path(checkpoint_dir)
    write_json(checkpoint_dir / FINISHED_FILE, {"finished": True})
    if not keep_checkpoints:
        for checkpoint in checkpoints_in(checkpoint_dir):
            shutil.rmtree(checkpoint)


def checkpoints_in(checkpoint_dir: Path) -> list[Path]:
    """The checkpoint-N folders in `checkpoint_dir`, newest (highest step) first."""
    return sorted(
        (p for p in Path(checkpoint_dir).iterdir() if checkpoint_step(p) is not None and p.is_dir()),
        key=checkpoint_step,
        reverse=True,
    )


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def _reason_to_start_over(checkpoint_dir: Path, fingerprint: dict) -> str | None:
    stored = _read_json(checkpoint_dir / FINGERPRINT_FILE)
    if stored is None:
        return f"they have no readable {FINGERPRINT_FILE}, so what they were made with is unknown"
    if stored != fingerprint:
        changed = changed_keys(stored, fingerprint)
        named = ", ".join(changed[:_CHANGES_NAMED]) + (
            f" and {len(changed) - _CHANGES_NAMED} more" if len(changed) > _CHANGES_NAMED else ""
        )
        return f"they were made with different {named}"
    if (checkpoint_dir / FINISHED_FILE).is_file():
        return "they belong to a run that finished, and this job trains it again"
    return None


def changed_keys(before, after, prefix: str = "") -> list[str]:
    """Dotted paths of the values that differ between two JSON-like mappings, sorted."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return [prefix or "(everything)"] if before != after else []
    changed = []
    for key in sorted(set(before) | set(after), key=str):
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in before or key not in after:
            changed.append(path)
        else:
            changed.extend(changed_keys(before[key], after[key], path))
    return changed


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
